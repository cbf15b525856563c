package netns

import (
	"fmt"

	"github.com/coreos/go-iptables/iptables"
)

var _ IPTables = (*iptables.IPTables)(nil)

// newIPTables returns go-iptables for IPv4. It execs iptables in the calling
// process's network namespace, which is the daemon's.
func newIPTables() (IPTables, error) {
	ipt, err := iptables.NewWithProtocol(iptables.ProtocolIPv4)
	if err != nil {
		return nil, fmt.Errorf("finding iptables: %w", err)
	}
	return ipt, nil
}
