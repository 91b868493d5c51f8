package upstream

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
	"testing/iotest"
)

func TestSecretBytesDecodesLikeEncodingJSON(t *testing.T) {
	t.Parallel()
	inputs := []string{
		`""`, `"plain"`, `"with \"quotes\" and \\ and \/"`, `"\b\f\n\r\t"`,
		`"\u00e9\u4e2d"`, `"é中"`, `"\ud83d\ude00"`, `"\ud83d"`, `"\ude00x"`, `"\ud83d\u0041"`,
		"\"\xff\xfe\"", `"s3cr3t/\"quoted\"+é"`,
	}
	for _, in := range inputs {
		var want string
		if err := json.Unmarshal([]byte(in), &want); err != nil {
			t.Fatalf("%s: %v", in, err)
		}
		var got secretBytes
		if err := json.Unmarshal([]byte(in), &got); err != nil {
			t.Errorf("%s: %v", in, err)
			continue
		}
		if string(got) != want {
			t.Errorf("%s: got %q, want %q", in, got, want)
		}
	}
	for _, bad := range []string{`42`, `true`, `{}`, `["x"]`} {
		var got secretBytes
		if err := json.Unmarshal([]byte(bad), &got); err == nil {
			t.Errorf("%s accepted as a secret", bad)
		}
	}
	var n secretBytes
	if err := json.Unmarshal([]byte(`null`), &n); err != nil || n != nil {
		t.Errorf("null: %v %q", err, n)
	}
}

func TestSecretBytesRepeatedKeyWipesTheFirst(t *testing.T) {
	t.Parallel()
	var body struct {
		S secretBytes `json:"s"`
	}
	var first []byte
	body.S = secretBytes("first")
	first = body.S
	if err := json.Unmarshal([]byte(`{"s":"second"}`), &body); err != nil {
		t.Fatal(err)
	}
	if string(body.S) != "second" || !bytes.Equal(first, make([]byte, len(first))) {
		t.Errorf("got %q, first now %q", body.S, first)
	}
}

func TestWipe(t *testing.T) {
	t.Parallel()
	c := &Credentials{ClientID: "id", ClientSecret: []byte("secret")}
	buf := c.ClientSecret
	c.Wipe()
	if !bytes.Equal(buf, make([]byte, 6)) || c.ClientSecret != nil || c.ClientID != "" {
		t.Errorf("after Wipe: buf %q, %+v", buf, c)
	}
	c.Wipe()
	var nilCreds *Credentials
	nilCreds.Wipe()
}

func TestBasicAuthorizationIsPlainNotFormEncoded(t *testing.T) {
	t.Parallel()
	got := basicAuthorization("id:x", []byte("p@ss w/rd+%"))
	want := "Basic " + base64.StdEncoding.EncodeToString([]byte("id:x:p@ss w/rd+%"))
	if got != want {
		t.Errorf("got %s, want %s", got, want)
	}
}

func TestCredentialsFormattingRedacts(t *testing.T) {
	t.Parallel()
	c := &Credentials{Tenant: "acme", ClientID: "cid-visible?", ClientSecret: []byte("sec-visible?"), Region: "eu-west-1"}
	var logs bytes.Buffer
	slog.New(slog.NewJSONHandler(&logs, nil)).Info("x", "creds", c, "token", Token{AccessToken: "tok-visible?"},
		"issued", Issued{AccessToken: "tok-visible?"}, "static", StaticToken{AccessToken: "tok-visible?"})
	out := fmt.Sprintf("%v %+v %#v %s %v %#v %v", c, c, c, c, Token{AccessToken: "tok-visible?"},
		Issued{AccessToken: "tok-visible?"}, StaticToken{AccessToken: "tok-visible?"}) + logs.String()
	assertNoSecrets(t, "formatted values", out, "cid-visible?", "sec-visible?", "tok-visible?")
	if !strings.Contains(out, "acme") {
		t.Errorf("redaction hid the tenant too: %s", out)
	}
}

func TestReadCapped(t *testing.T) {
	t.Parallel()
	for _, size := range []int{0, 1, 511, 512, 513, 5000, 1 << 16} {
		data := bytes.Repeat([]byte("a"), size)
		for _, hint := range []int64{-1, int64(size), 3} {
			got, err := readCapped(iotest.HalfReader(bytes.NewReader(data)), 1<<16, hint)
			if err != nil || !bytes.Equal(got, data) {
				t.Errorf("size %d hint %d: %d bytes, %v", size, hint, len(got), err)
			}
		}
	}
	if _, err := readCapped(bytes.NewReader(make([]byte, 101)), 100, -1); !errors.Is(err, errBodyTooLarge) {
		t.Errorf("over the cap: %v", err)
	}
	if _, err := readCapped(bytes.NewReader(make([]byte, 101)), 100, 101); !errors.Is(err, errBodyTooLarge) {
		t.Errorf("over the cap with hint: %v", err)
	}
	if _, err := readCapped(iotest.ErrReader(io.ErrUnexpectedEOF), 100, -1); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("read error: %v", err)
	}
}
