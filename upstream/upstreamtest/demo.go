package upstreamtest

// DemoEncryptedTenant is the demo tenant whose client secret the demo
// Tenant Service serves encrypted (a JWE for Demo.CredentialKey).
const DemoEncryptedTenant = "demo-encrypted"

// Demo is the set of fakes token-sidecar -demo runs in-process: a Tenant
// Service that invents credentials for any tenant, the login host that
// accepts them, and an API that accepts the tokens it issues.
type Demo struct {
	TenantService *TenantService
	Login         *Login
	API           *API
	// CredentialKey seals DemoEncryptedTenant's secret: an ECDH-ES+A256KW
	// key generated in memory at start, kid "demo". CredentialKey.JWK (or
	// JWKSet) is what the sidecar opens it with.
	CredentialKey *EncryptionKey
}

// NewDemo starts the demo fakes; every tenant gets credentials in region
// ("" means "eu-west-1"). Close it when done.
func NewDemo(region string) *Demo {
	if region == "" {
		region = "eu-west-1"
	}
	d := &Demo{Login: NewLogin(), TenantService: NewTenantService()}
	d.API = NewAPI(d.Login)
	d.TenantService.AutoProvision(region, d.Login)
	d.CredentialKey = MustEncryptionKey("demo", AlgECDHESA256KW)
	d.TenantService.EncryptFor(DemoEncryptedTenant, d.CredentialKey)
	return d
}

// Close stops every fake.
func (d *Demo) Close() {
	d.TenantService.Close()
	d.Login.Close()
	d.API.Close()
}
