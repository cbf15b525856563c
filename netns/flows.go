package netns

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os/exec"
	"sync"

	"github.com/interceptd/interceptd/metrics"
	"github.com/prometheus/client_golang/prometheus"
)

// Allowed routed flows. The kernel counts them in the sets of NFTTable
// (nftTable's routed chain): each sandbox address's new flows by protocol
// and the bytes it sent and received, in counters carried by the sets'
// elements, so the rule count does not grow with the sandboxes. FlowMetrics
// reads them when Prometheus scrapes, and adds what each counter grew by
// since the last read to the series of the sandbox that holds the address
// then, or that held it last (a sandbox deleted since: its address is not
// given again before the read that settles it, see Manager.reaper); so the
// series are ordinary counters with the bounded sandbox label, and an
// address given to a new sandbox starts it from where the old one's count
// stopped.

// FlowMetrics are the allowed routed flow metrics.
//
//	interceptd_sandbox_routed_flows_total{sandbox,proto}     proto: tcp|udp|icmp|other
//	interceptd_sandbox_routed_bytes_total{sandbox,direction} direction: sent|received
type FlowMetrics struct {
	flows, bytes *prometheus.CounterVec
	labels       *metrics.SandboxLabels

	mu sync.Mutex
	// list returns `nft -j list table ip NFTTable`; owner names the
	// sandbox at an address (the manager sets both, see New).
	list  func() ([]byte, error)
	owner func(netip.Addr) (string, bool)
	// last is each kernel counter's value at the last read.
	last map[flowKey]uint64
	// retired: the addresses of sandboxes deleted since the last read,
	// and their names, which that read counts what grew for.
	retired map[netip.Addr]string
}

// flowKey is one kernel counter: a set's element.
type flowKey struct {
	set   string
	addr  netip.Addr
	proto string // NFTSetFlows only
}

// NewFlowMetrics registers the flow metrics on reg, with sandbox label
// values from labels.
func NewFlowMetrics(reg prometheus.Registerer, labels *metrics.SandboxLabels) *FlowMetrics {
	f := &FlowMetrics{
		flows: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "interceptd", Subsystem: "sandbox", Name: "routed_flows_total",
			Help: "Allowed routed (non-HTTP, non-DNS) flows sandboxes started, by protocol.",
		}, []string{"sandbox", "proto"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "interceptd", Subsystem: "sandbox", Name: "routed_bytes_total",
			Help: "Bytes of allowed routed (non-HTTP, non-DNS) traffic, sent by sandboxes and received by them (IP packets, headers included).",
		}, []string{"sandbox", "direction"}),
		labels:  labels,
		last:    map[flowKey]uint64{},
		retired: map[netip.Addr]string{},
	}
	reg.MustRegister(f)
	labels.Track(f.flows, f.bytes)
	return f
}

// Describe implements prometheus.Collector.
func (f *FlowMetrics) Describe(ch chan<- *prometheus.Desc) {
	f.flows.Describe(ch)
	f.bytes.Describe(ch)
}

// Collect implements prometheus.Collector: it reads the kernel's counters
// first.
func (f *FlowMetrics) Collect(ch chan<- prometheus.Metric) {
	f.read()
	f.flows.Collect(ch)
	f.bytes.Collect(ch)
}

// nftList lists NFTTable, in JSON, in the calling process's namespace: one
// command for the four sets (each nft run costs tens of milliseconds on a
// busy host).
func nftList() ([]byte, error) {
	out, err := exec.Command("nft", "-j", "list", "table", "ip", NFTTable).Output()
	if err != nil {
		return nil, fmt.Errorf("listing nft table %s: %w", NFTTable, err)
	}
	return out, nil
}

// retire tells f that the sandbox name at addr is deleted: the next read
// counts for it what grew there meanwhile.
func (f *FlowMetrics) retire(addr netip.Addr, name string) {
	if f == nil {
		return
	}
	f.mu.Lock()
	f.retired[addr] = name
	f.mu.Unlock()
}

// settle reads the counters if a deleted sandbox's are still unread; the
// manager calls it before giving the address again.
func (f *FlowMetrics) settle() {
	if f == nil {
		return
	}
	f.mu.Lock()
	n := len(f.retired)
	f.mu.Unlock()
	if n > 0 {
		f.read()
	}
}

// read adds what each kernel counter grew by to the series of the sandbox
// at its address now (or deleted from it since the last read). A counter
// of an address no sandbox holds is only remembered (what grows there
// belongs to no one); one that went down was made again (the table was
// replaced): all of it is new.
func (f *FlowMetrics) read() {
	if f == nil {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.list == nil || f.owner == nil {
		return
	}
	raw, err := f.list()
	if err != nil {
		return // a table being replaced; the next read catches up
	}
	counts, err := parseFlowSets(raw)
	if err != nil {
		return
	}
	for k, v := range counts {
		grew := v
		if was, ok := f.last[k]; ok && v >= was {
			grew = v - was
		}
		f.last[k] = v
		name, ok := f.retired[k.addr]
		if !ok {
			name, ok = f.owner(k.addr)
		}
		if !ok || grew == 0 {
			continue
		}
		label := f.labels.Get(name)
		switch k.set {
		case NFTSetFlows:
			f.flows.WithLabelValues(label, k.proto).Add(float64(grew))
		case NFTSetFlowsOther:
			f.flows.WithLabelValues(label, "other").Add(float64(grew))
		case NFTSetSent:
			f.bytes.WithLabelValues(label, "sent").Add(float64(grew))
		case NFTSetReceived:
			f.bytes.WithLabelValues(label, "received").Add(float64(grew))
		}
	}
	clear(f.retired)
}

// parseFlowSets reads the elements of the flow sets from `nft -j list
// table`: for NFTSetFlows and NFTSetFlowsOther the new flows (the packets of
// the counter, one per flow), for the others the bytes.
func parseFlowSets(raw []byte) (map[flowKey]uint64, error) {
	var doc struct {
		Nftables []struct {
			Set *struct {
				Name string `json:"name"`
				Elem []struct {
					Elem struct {
						Val     json.RawMessage `json:"val"`
						Counter struct {
							Packets uint64 `json:"packets"`
							Bytes   uint64 `json:"bytes"`
						} `json:"counter"`
					} `json:"elem"`
				} `json:"elem"`
			} `json:"set"`
		} `json:"nftables"`
	}
	if err := json.Unmarshal(raw, &doc); err != nil {
		return nil, fmt.Errorf("reading nft table %s: %w", NFTTable, err)
	}
	out := map[flowKey]uint64{}
	for _, x := range doc.Nftables {
		if x.Set == nil {
			continue
		}
		set := x.Set.Name
		switch set {
		case NFTSetFlows, NFTSetFlowsOther, NFTSetSent, NFTSetReceived:
		default:
			continue // the dns flood limit's
		}
		for _, e := range x.Set.Elem {
			k := flowKey{set: set}
			var addr string
			if set == NFTSetFlows {
				var c struct {
					Concat []json.RawMessage `json:"concat"`
				}
				if json.Unmarshal(e.Elem.Val, &c) != nil || len(c.Concat) != 2 || json.Unmarshal(c.Concat[0], &addr) != nil {
					continue
				}
				var proto string
				json.Unmarshal(c.Concat[1], &proto) // a name; a number for one nft cannot name
				switch proto {
				case "tcp", "udp", "icmp":
					k.proto = proto
				default:
					k.proto = "other"
				}
			} else if json.Unmarshal(e.Elem.Val, &addr) != nil {
				continue
			}
			a, err := netip.ParseAddr(addr)
			if err != nil {
				continue
			}
			k.addr = a
			v := e.Elem.Counter.Bytes
			if set == NFTSetFlows || set == NFTSetFlowsOther {
				v = e.Elem.Counter.Packets // one counted packet per flow (FlowMark)
			}
			out[k] += v
		}
	}
	return out, nil
}
