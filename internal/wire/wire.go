// Package wire is the protocol between a prefork master and its children:
// how a child is marked and handed its sockets, and the fixed-size records
// that travel over the status socket between them.
//
// # Handover
//
// The master starts a child by executing its own binary again with the same
// arguments and this environment added:
//
//	PREFORK_CHILD=<Version>     marks the process as a child
//	PREFORK_MASTER_PID=<pid>    the master; a child whose parent is not it exits
//	PREFORK_LISTENERS=<json>    the listeners, a JSON array of Listener
//	PREFORK_BOARD=<slot>,<n>    the child's slot on the scoreboard, of n slots
//	PREFORK_PARKED=1            the child starts parked (only then)
//
// and these descriptors:
//
//	fd 3 (FDStatus)          the child's end of an AF_UNIX stream socketpair
//	fd 4 (FDBoard)           the scoreboard's file (see package board)
//	fd 5.. (FDFirstListener) the inherited listening sockets, as Listener.FD says
//
// In reuse-port mode a Listener has no descriptor: the child binds its own
// socket to the address, which the master has resolved (port 0 is a real
// port by then).
//
// The listeners are non-blocking: the master sets O_NONBLOCK once, before the
// first child starts, and nobody changes it afterwards (the flag belongs to
// the socket that every child shares, not to one process).
//
// # Upgrade
//
// A master that upgrades starts the program's binary, as it is on disk now,
// as its successor: a new master, with the same arguments, the master's
// environment and this added:
//
//	PREFORK_UPGRADE=<json>   an Upgrade: the sockets handed over
//
// and these descriptors:
//
//	fd 3 (FDUpgradeLink)          the successor's end of an AF_UNIX stream
//	                              socketpair with the master
//	fd 4.. (FDFirstUpgradeSocket) the sockets, as UpgradeSocket.FD says
//
// The successor writes one byte on the link once its pool is ready; end of
// file without it means that the successor failed. The master answers with
// one byte when it takes the successor's word, and stops: from then on the
// sockets that it created (UpgradeSocket.Owned) are the successor's, to
// close and remove when it stops. Until then they stay the master's, so
// that a successor that fails leaves them as they were. End of file on the
// link once the successor is ready means that the master is gone, and the
// sockets are the successor's too.
//
// # Status records
//
// Each record is RecordSize bytes: the protocol version, a Kind, two zero
// bytes and a big-endian uint32: the child's count of requests served (for
// logs; the scoreboard's count is the one the master uses), or for Failed
// the length of the text that follows, or for Contended the number of
// requests the child had begun, and so for Slow.
// Children send Idle once, when they are ready; Busy when they take a
// request while the master has armed the scoreboard's alarm (the
// scoreboard, not records, says who is idle or busy); Retiring; and Failed,
// followed by the error's text. The master sends Retire, Stop, Park,
// Unpark, Look, Contended and Slow. End of file
// on the socket means the peer is gone: for the master, that the child died;
// for the child, that the master died.
package wire

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// Version is the protocol version. A child refuses to run for a master that
// speaks another one, which can only happen if binaries are mixed.
const Version = 3

// Environment variables and descriptor numbers of the handover.
const (
	EnvChild     = "PREFORK_CHILD"
	EnvMasterPID = "PREFORK_MASTER_PID"
	EnvListeners = "PREFORK_LISTENERS"
	EnvBoard     = "PREFORK_BOARD"
	// EnvParked says that the child starts parked: it does not watch the
	// listeners until the master unparks it.
	EnvParked = "PREFORK_PARKED"
	// EnvMaxProcs marks a GOMAXPROCS that the master set for the child's
	// runtime to start with; the child removes both.
	EnvMaxProcs = "PREFORK_GOMAXPROCS"

	FDStatus        = 3
	FDBoard         = 4
	FDFirstListener = 5
)

// EnvNames lists the handover's environment variables: a child removes
// them, and the master replaces any it inherited.
var EnvNames = []string{EnvChild, EnvMasterPID, EnvListeners, EnvBoard, EnvParked, EnvMaxProcs}

// RecordSize is the size in bytes of every status record.
const RecordSize = 8

// Kind says what a record reports or asks.
type Kind uint8

// Record kinds. The zero Kind is invalid so that a zeroed buffer never
// decodes as a record.
const (
	// Idle: the child has initialized and waits for its first request.
	Idle Kind = iota + 1
	// Busy: the child has taken a request and found the scoreboard's
	// alarm armed; the master looks at the pool again.
	Busy
	// Retiring: the child takes no more requests and is about to exit
	// (it reached its request limit, or was asked to stop).
	Retiring
	// Retire is sent by the master to a child it no longer needs: take
	// no new request, and exit once the current one, if any, is done.
	Retire
	// Failed: the child is about to exit because of an error. Its
	// count is the length of the error text that follows the record, at
	// most MaxText bytes.
	Failed
	// Stop is sent by the master when the pool stops gracefully: as
	// Retire, and the child also tells its request that a stop has begun
	// and bounds it by the shutdown timeout.
	Stop
	// Park is sent by the master to a ready child it keeps spare: finish
	// the request in hand, then wait without taking requests.
	Park
	// Unpark is sent by the master to a parked child: take requests again.
	Unpark
	// Look is sent by the master to an idle child when a child that died
	// may have been woken for a connection that now waits for nobody: try
	// to take one, although no wait has seen it.
	Look
	// Contended is sent by the master to a busy child that waits for its
	// client while connections wait that no child will take soon: let the
	// client go if it only holds the connection. Served is the number of
	// requests the child had begun, which names the request meant.
	Contended
	// Slow is sent by the master to a child whose request has run for
	// Manager.SlowRequest: log the stacks of its goroutines. Served names
	// the request, as for Contended.
	Slow
	maxKind = Slow
)

// FromMaster reports whether only the master sends records of kind k.
func (k Kind) FromMaster() bool {
	return k == Retire || k == Stop || k == Park || k == Unpark || k == Look || k == Contended || k == Slow
}

// MaxText bounds the text of a Failed record.
const MaxText = 256

func (k Kind) String() string {
	switch k {
	case Idle:
		return "idle"
	case Busy:
		return "busy"
	case Retiring:
		return "retiring"
	case Retire:
		return "retire"
	case Failed:
		return "failed"
	case Stop:
		return "stop"
	case Park:
		return "park"
	case Unpark:
		return "unpark"
	case Look:
		return "look"
	case Contended:
		return "contended"
	case Slow:
		return "slow"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// Record is one decoded status message.
type Record struct {
	Kind   Kind
	Served uint32 // requests the child has finished so far; for Failed, len(Text)
	Text   string // for Failed: the error
}

// ErrMalformed is returned for bytes that are not a valid record.
var ErrMalformed = errors.New("wire: malformed status record")

// Encode writes r into b, which must hold RecordSize bytes, and returns the
// encoded slice. For a Failed record use EncodeFailed.
func Encode(b *[RecordSize]byte, r Record) []byte {
	b[0] = Version
	b[1] = byte(r.Kind)
	b[2], b[3] = 0, 0
	binary.BigEndian.PutUint32(b[4:], r.Served)
	return b[:]
}

// EncodeFailed returns a Failed record carrying msg, cut to MaxText bytes.
func EncodeFailed(msg string) []byte {
	if len(msg) > MaxText {
		msg = msg[:MaxText]
	}
	var b [RecordSize]byte
	return append(Encode(&b, Record{Kind: Failed, Served: uint32(len(msg))}), msg...)
}

// Decode parses one record from exactly RecordSize bytes. For a Failed
// record, the text that follows is not part of b: Served gives its length.
func Decode(b []byte) (Record, error) {
	if len(b) != RecordSize {
		return Record{}, fmt.Errorf("%w: %d bytes, want %d", ErrMalformed, len(b), RecordSize)
	}
	if b[0] != Version {
		return Record{}, fmt.Errorf("%w: version %d, want %d", ErrMalformed, b[0], Version)
	}
	k := Kind(b[1])
	if k == 0 || k > maxKind {
		return Record{}, fmt.Errorf("%w: unknown kind %d", ErrMalformed, b[1])
	}
	if b[2] != 0 || b[3] != 0 {
		return Record{}, fmt.Errorf("%w: reserved bytes set", ErrMalformed)
	}
	r := Record{Kind: k, Served: binary.BigEndian.Uint32(b[4:])}
	if k == Failed && r.Served > MaxText {
		return Record{}, fmt.Errorf("%w: error text of %d bytes", ErrMalformed, r.Served)
	}
	return r, nil
}

// Reader decodes a stream of records, reading as many as are available with
// each read so that a busy peer costs one read per batch, not per record.
type Reader struct {
	r   io.Reader
	buf [64 * RecordSize]byte
	beg int // first undecoded byte
	end int // end of the bytes read
}

// NewReader returns a Reader of the records in r.
func NewReader(r io.Reader) *Reader { return &Reader{r: r} }

// Next returns the next record. It returns io.EOF at a clean end of stream,
// io.ErrUnexpectedEOF if the stream ends inside a record, and an error
// wrapping ErrMalformed for bytes that are not a record.
func (r *Reader) Next() (Record, error) {
	if err := r.fill(RecordSize); err != nil {
		return Record{}, err
	}
	rec, err := Decode(r.buf[r.beg : r.beg+RecordSize])
	r.beg += RecordSize
	if err != nil || rec.Kind != Failed {
		return rec, err
	}
	n := int(rec.Served)
	if err := r.fill(n); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return Record{}, err
	}
	rec.Text = string(r.buf[r.beg : r.beg+n])
	rec.Served = 0
	r.beg += n
	return rec, nil
}

// fill reads until at least n undecoded bytes are buffered.
func (r *Reader) fill(n int) error {
	for r.end-r.beg < n {
		if r.beg > 0 {
			r.end = copy(r.buf[:], r.buf[r.beg:r.end])
			r.beg = 0
		}
		m, err := r.r.Read(r.buf[r.end:])
		r.end += m
		if m > 0 {
			continue
		}
		if err == io.EOF && r.end > 0 {
			return io.ErrUnexpectedEOF
		}
		if err == nil {
			err = io.ErrNoProgress
		}
		return err
	}
	return nil
}

// Listener describes one listening socket of the handover.
type Listener struct {
	// Name is the name requests from it carry (Request.SocketName).
	Name    string `json:"name,omitempty"`
	Network string `json:"network"`
	Addr    string `json:"addr"`
	// FD is the inherited descriptor. Zero means reuse-port mode: the
	// child binds a socket of its own to Addr with SO_REUSEPORT.
	FD int `json:"fd,omitempty"`
}

// EncodeListeners is the value of EnvListeners.
func EncodeListeners(ls []Listener) string {
	b, _ := json.Marshal(ls) // cannot fail for these types
	return string(b)
}

// DecodeListeners parses the value of EnvListeners.
func DecodeListeners(s string) ([]Listener, error) {
	var ls []Listener
	if err := json.Unmarshal([]byte(s), &ls); err != nil {
		return nil, fmt.Errorf("%s: %w", EnvListeners, err)
	}
	if len(ls) == 0 {
		return nil, fmt.Errorf("%s: no listener", EnvListeners)
	}
	for _, l := range ls {
		if l.FD != 0 && l.FD < FDFirstListener {
			return nil, fmt.Errorf("%s: descriptor %d is not a listener's", EnvListeners, l.FD)
		}
	}
	return ls, nil
}
