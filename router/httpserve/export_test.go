package httpserve

// For the server's external tests (serve_test.go), which run it behind the
// router through routertest.

// WatchAfter is how long a handler runs before its connection is watched.
const WatchAfter = watchAfter

// PreSize is what an idle connection reads its next request into first.
const PreSize = preSize

// Closing reports that Shutdown has begun.
func (s *Server) Closing() bool { return s.closing.Load() }

// Sweeping reports that the watch sweeper runs.
func (s *Server) Sweeping() bool { return s.sweeping.Load() }
