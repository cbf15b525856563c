package router

import "testing"

// Moved from the server's tests with nextRequestID, which is now the
// connection cache's (ConnCache), drawn by every transport: the lean loop
// and net/http alike. The third id, once the shared counter's own
// (newRequestID, for net/http's requests), is now a connection's that
// carries one request and so draws a block for each.
func TestRequestIDsAreUniqueAcrossConnectionsBlocksAndTheSharedCounter(t *testing.T) {
	seen := map[string]bool{}
	a, b := &ConnCache{}, &ConnCache{}
	for i := 0; i < 3*idBlock; i++ {
		for _, id := range []string{a.nextRequestID(), b.nextRequestID(), new(ConnCache).nextRequestID()} {
			if seen[id] {
				t.Fatalf("request id %s handed out twice (after %d rounds)", id, i)
			}
			seen[id] = true
		}
	}
}
