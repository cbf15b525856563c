// Package tlsfront is the daemon's port-443 front. TPROXY hands it every
// TCP connection a sandbox opens to port 443; for each, it reads the
// ClientHello without terminating TLS (router/tlspeek), asks for a verdict
// on the server name it names (Decider: router.(*Router).DecideTLS, which
// applies policy.Verdicts.TLS), and then either refuses the connection at
// once with a TCP reset, or dials the address the sandbox dialled and
// passes the two through, the hello and every byte after it unchanged, so
// that the client's certificate validation is untouched. After the hello it
// does no per-request work: the sandbox's bytes go to the upstream by
// splice(2) after their first 64 KiB, the upstream's come back by reads and
// writes through a pooled buffer (pass.go says why).
//
// It imports the router for the verdict's type only; the router knows
// nothing of it.
package tlsfront
