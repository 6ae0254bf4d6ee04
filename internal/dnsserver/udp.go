package dnsserver

import (
	"errors"
	"net"
	"net/netip"

	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

// defaultUDPBatch is how many datagrams one recvmmsg/sendmmsg call moves.
const defaultUDPBatch = 32

// maxUDPQuery is the largest query read over UDP; anything longer arrives
// cut and is answered FORMERR.
const maxUDPQuery = 4096

// batchConn is what ipv4.PacketConn and ipv6.PacketConn share: batched
// reads and writes (recvmmsg and sendmmsg on Linux, one at a time
// elsewhere).
type batchConn interface {
	ReadBatch(ms []ipv4.Message, flags int) (int, error)
	WriteBatch(ms []ipv4.Message, flags int) (int, error)
}

// serveUDP answers on one UDP socket until it is closed, moving up to
// Config.UDPBatch datagrams per system call each way.
func (s *Server) serveUDP(uc *net.UDPConn) {
	var bc batchConn
	if a, ok := uc.LocalAddr().(*net.UDPAddr); ok && a.IP.To4() != nil {
		bc = ipv4.NewPacketConn(uc)
	} else {
		bc = ipv6.NewPacketConn(uc)
	}
	batch := s.cfg.UDPBatch
	rms := make([]ipv4.Message, batch)
	wms := make([]ipv4.Message, batch)
	outs := make([][]byte, batch)
	for i := range rms {
		rms[i].Buffers = [][]byte{make([]byte, maxUDPQuery)}
		wms[i].Buffers = [][]byte{nil}
		outs[i] = make([]byte, s.cfg.MaxUDPSize+optLen)
	}
	for {
		n, err := bc.ReadBatch(rms, 0)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			s.log.Warn("dns udp read", "err", err)
			continue
		}
		k := 0
		for i := 0; i < n; i++ {
			m := &rms[i]
			var from netip.Addr
			if s.loc.on() {
				from = udpAddr(m.Addr)
			}
			resp, handed := s.respondOrHandOff(m.Buffers[0][:m.N], outs[i], false, s.stepAside.Load(), true, from)
			if handed {
				resp = s.handOffUDP(m.Buffers[0][:m.N], m.Addr, outs[i])
			}
			if resp == nil {
				continue
			}
			wms[k].Buffers[0] = resp
			wms[k].Addr = m.Addr
			k++
		}
		for sent := 0; sent < k; {
			w, err := bc.WriteBatch(wms[sent:k], 0)
			if err != nil {
				if errors.Is(err, net.ErrClosed) {
					return
				}
				s.log.Debug("dns udp write", "err", err)
				// Skip the datagram that failed (an unreachable client)
				// and carry on with the rest.
				w = max(w, 1)
			}
			sent += w
		}
	}
}

// handOffUDP returns the transfers' answer to req (see SetTransfers),
// copied into out when it fits there.
func (s *Server) handOffUDP(req []byte, from net.Addr, out []byte) []byte {
	t := s.transfers.Load()
	ua, ok := from.(*net.UDPAddr)
	if t == nil || !ok {
		return nil
	}
	ap := ua.AddrPort()
	ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	resp := (*t).AnswerUDP(req, ap)
	if len(resp) <= len(out) {
		return out[:copy(out, resp)]
	}
	return resp
}

// udpAddr is the address of a datagram's sender; zero when unknown.
func udpAddr(a net.Addr) netip.Addr {
	if ua, ok := a.(*net.UDPAddr); ok {
		return ua.AddrPort().Addr()
	}
	return netip.Addr{}
}
