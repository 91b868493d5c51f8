package upstreamtest

import "iter"

// tokensForTest yields every token the fake issued and did not revoke.
func (l *Login) tokensForTest() iter.Seq[string] {
	l.mu.Lock()
	toks := make([]string, 0, len(l.tokens))
	for tok := range l.tokens {
		toks = append(toks, tok)
	}
	l.mu.Unlock()
	return func(yield func(string) bool) {
		for _, tok := range toks {
			if !yield(tok) {
				return
			}
		}
	}
}
