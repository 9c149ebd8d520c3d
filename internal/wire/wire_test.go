package wire

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestEncodeDecodeRoundTrip(t *testing.T) {
	for _, rec := range []Record{
		{Kind: Idle}, {Kind: Busy, Served: 1}, {Kind: Retiring, Served: 1<<32 - 1}, {Kind: Retire}, {Kind: Stop}, {Kind: Park}, {Kind: Unpark}, {Kind: Look}, {Kind: Contended, Served: 7}, {Kind: Slow, Served: 9},
	} {
		var b [RecordSize]byte
		got, err := Decode(Encode(&b, rec))
		require.NoError(t, err)
		assert.Equal(t, rec, got)
	}
}

func TestDecodeRejectsMalformed(t *testing.T) {
	valid := func() []byte { var b [RecordSize]byte; return Encode(&b, Record{Kind: Busy, Served: 7}) }
	cases := map[string]func([]byte) []byte{
		"short":         func(b []byte) []byte { return b[:RecordSize-1] },
		"long":          func(b []byte) []byte { return append(b, 0) },
		"empty":         func([]byte) []byte { return nil },
		"zero":          func([]byte) []byte { return make([]byte, RecordSize) },
		"version":       func(b []byte) []byte { b[0] = Version + 1; return b },
		"kind zero":     func(b []byte) []byte { b[1] = 0; return b },
		"kind unknown":  func(b []byte) []byte { b[1] = byte(maxKind) + 1; return b },
		"reserved byte": func(b []byte) []byte { b[3] = 1; return b },
	}
	for name, mangle := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := Decode(mangle(valid()))
			assert.ErrorIs(t, err, ErrMalformed)
		})
	}
}

// oneByteReader returns at most one byte per Read, as a stream socket may.
type oneByteReader struct{ r io.Reader }

func (o oneByteReader) Read(p []byte) (int, error) { return o.r.Read(p[:min(len(p), 1)]) }

func TestReaderStream(t *testing.T) {
	var stream bytes.Buffer
	var want []Record
	for i := range 200 { // more than one buffer's worth
		rec := Record{Kind: []Kind{Idle, Busy, Retiring, Retire, Stop}[i%5], Served: uint32(i)}
		var b [RecordSize]byte
		stream.Write(Encode(&b, rec))
		want = append(want, rec)
		if i%50 == 0 {
			failed := Record{Kind: Failed, Text: strings.Repeat("x", i)}
			stream.Write(EncodeFailed(failed.Text))
			want = append(want, failed)
		}
	}
	for name, src := range map[string]io.Reader{
		"whole":    bytes.NewReader(stream.Bytes()),
		"one byte": oneByteReader{bytes.NewReader(stream.Bytes())},
	} {
		t.Run(name, func(t *testing.T) {
			r := NewReader(src)
			for _, w := range want {
				got, err := r.Next()
				require.NoError(t, err)
				require.Equal(t, w, got)
			}
			_, err := r.Next()
			assert.Equal(t, io.EOF, err)
		})
	}
}

func TestReaderTruncated(t *testing.T) {
	var b [RecordSize]byte
	r := NewReader(bytes.NewReader(Encode(&b, Record{Kind: Idle})[:5]))
	_, err := r.Next()
	assert.Equal(t, io.ErrUnexpectedEOF, err)
}

func TestReaderMalformedThenGoesOn(t *testing.T) {
	var b [RecordSize]byte
	data := append(bytes.Repeat([]byte{0xff}, RecordSize), Encode(&b, Record{Kind: Busy, Served: 3})...)
	r := NewReader(bytes.NewReader(data))
	_, err := r.Next()
	require.ErrorIs(t, err, ErrMalformed)
	got, err := r.Next()
	require.NoError(t, err)
	assert.Equal(t, Record{Kind: Busy, Served: 3}, got)
}

func TestFailedRecord(t *testing.T) {
	long := strings.Repeat("e", MaxText+10)
	r := NewReader(bytes.NewReader(EncodeFailed(long)))
	rec, err := r.Next()
	require.NoError(t, err)
	assert.Equal(t, Record{Kind: Failed, Text: long[:MaxText]}, rec, "cut to MaxText")

	cut := EncodeFailed("bind: address already in use")
	_, err = NewReader(bytes.NewReader(cut[:len(cut)-3])).Next()
	assert.Equal(t, io.ErrUnexpectedEOF, err)

	var b [RecordSize]byte
	_, err = Decode(Encode(&b, Record{Kind: Failed, Served: MaxText + 1}))
	assert.ErrorIs(t, err, ErrMalformed, "a length above MaxText")
}

func TestListenersRoundTrip(t *testing.T) {
	ls := []Listener{{Name: "web", Network: "tcp", Addr: "127.0.0.1:80", FD: 5}, {Network: "unixgram", Addr: "/run/a,b", FD: 6}, {Network: "udp", Addr: "[::1]:9"}}
	got, err := DecodeListeners(EncodeListeners(ls))
	require.NoError(t, err)
	assert.Equal(t, ls, got)
	for _, bad := range []string{"", "[]", "{", `[{"network":"tcp","fd":2}]`} {
		_, err := DecodeListeners(bad)
		assert.Error(t, err, "%q", bad)
	}
}

func FuzzDecode(f *testing.F) {
	var b [RecordSize]byte
	f.Add(Encode(&b, Record{Kind: Idle, Served: 1}))
	f.Add([]byte{})
	f.Add([]byte{1, 2, 3})
	f.Fuzz(func(t *testing.T, data []byte) {
		rec, err := Decode(data)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v does not wrap ErrMalformed", err)
			}
			return
		}
		var out [RecordSize]byte
		if !bytes.Equal(Encode(&out, rec), data) {
			t.Fatalf("decoded %+v does not re-encode to %x", rec, data)
		}
	})
}

func FuzzReader(f *testing.F) {
	var b [RecordSize]byte
	f.Add(append(Encode(&b, Record{Kind: Idle}), 1, 2))
	f.Fuzz(func(t *testing.T, data []byte) {
		r := NewReader(bytes.NewReader(data))
		for i := 0; ; i++ {
			if i > len(data) {
				t.Fatal("reader did not stop")
			}
			_, err := r.Next()
			if err == io.EOF || err == io.ErrUnexpectedEOF {
				return
			}
			if err != nil && !errors.Is(err, ErrMalformed) {
				t.Fatalf("unexpected error %v", err)
			}
		}
	})
}

func BenchmarkEncode(b *testing.B) {
	var buf [RecordSize]byte
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		Encode(&buf, Record{Kind: Busy, Served: uint32(i)})
	}
}

// BenchmarkReader decodes a stream of records as the master reads them.
func BenchmarkReader(b *testing.B) {
	var one [RecordSize]byte
	stream := bytes.Repeat(Encode(&one, Record{Kind: Idle, Served: 7}), 1024)
	src := bytes.NewReader(stream)
	r := NewReader(src)
	b.ReportAllocs()
	b.SetBytes(RecordSize)
	for b.Loop() {
		if src.Len() == 0 {
			src.Reset(stream)
		}
		if _, err := r.Next(); err != nil {
			b.Fatal(err)
		}
	}
}

func TestUpgradeRoundTrip(t *testing.T) {
	u := Upgrade{Sockets: []UpgradeSocket{{Name: "web", Key: "tcp :80", FD: 4, Owned: true}, {Name: "echo.socket", FD: 5}}}
	got, err := DecodeUpgrade(EncodeUpgrade(u))
	require.NoError(t, err)
	u.Version = UpgradeVersion
	assert.Equal(t, u, got)
	for _, bad := range []string{
		"", "{", `{"version":99,"sockets":[]}`,
		fmt.Sprintf(`{"version":%d,"sockets":[{"fd":3}]}`, UpgradeVersion),
		fmt.Sprintf(`{"version":%d,"sockets":[{"fd":4},{"fd":4}]}`, UpgradeVersion),
	} {
		_, err := DecodeUpgrade(bad)
		assert.Error(t, err, "%q", bad)
	}
}
