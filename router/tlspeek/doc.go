// Package tlspeek reads a TLS ClientHello from the start of an intercepted
// TCP connection without terminating TLS and without losing a byte: Peek
// returns what the hello says (the SNI, ALPN, supported versions, whether
// ECH is in use) and a connection that replays every byte it read before
// reading on, so a splice to the original destination sends exactly what the
// client sent and the client's certificate validation stays untouched.
//
// It holds the record reassembly, the ClientHello parser, the replaying
// connection and the errors that say why a hello could not be read. It
// imports only the standard library, so that the port-443 front, the fuzzers
// and anything else can use it without pulling in the router.
package tlspeek
