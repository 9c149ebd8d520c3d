package preforkstatus

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prefork-go/prefork"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// fixture is a snapshot of a small pool at work.
func fixture() prefork.Stats {
	now := time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)
	return prefork.Stats{
		Time: now, Network: "tcp", Addr: "127.0.0.1:9000",
		Sockets: []prefork.SocketStats{
			{Name: "web", Network: "tcp", Addr: "127.0.0.1:9000", Queued: 2, MaxQueued: 4},
			{Name: `a "quoted" name`, Network: "unix", Addr: "/run/a.sock", Queued: 0, MaxQueued: 1},
			{Name: "web", Network: "tcp6", Addr: "[::1]:9000", Queued: 3, MaxQueued: 3}, // systemd's sockets can share a name
			{Name: "unread", Network: "unix", Addr: "/run/b.sock", Queued: -1, MaxQueued: -1},
		},
		Limits: prefork.Limits{MinServers: 2, MaxServers: 8, MinSpareServers: 1, MaxSpareServers: 4}, MaxRequests: 100,
		Children: []prefork.ChildStats{
			{PID: 101, State: prefork.ChildBusy, Served: 7, Started: now.Add(-time.Minute), BusySince: now.Add(-1500 * time.Millisecond), Remote: "127.0.0.1:50000", RSS: 12<<20 + 300<<10},
			{PID: 102, State: prefork.ChildIdle, Served: 3, Started: now.Add(-time.Minute), RSS: 9 << 20},
			{PID: 103, State: prefork.ChildParked, Started: now.Add(-time.Second)},
		},
		Queued: 2, MaxQueued: 5, Requests: 11, Started: 5,
		Exits:             map[prefork.ExitReason]uint64{prefork.ExitMaxRequests: 1, prefork.ExitMemoryLimit: 2, prefork.ExitSignaled: 1},
		MaxServersReached: 1,
		SlowRequests:      2,
	}
}

func get(t *testing.T, url string, header ...string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	require.NoError(t, err)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp, string(body)
}

func TestMetricsParseAsPrometheusText(t *testing.T) {
	srv := httptest.NewServer(handler(fixture))
	defer srv.Close()
	resp, body := get(t, srv.URL+"/metrics")
	require.Equal(t, http.StatusOK, resp.StatusCode)
	format := expfmt.ResponseFormat(resp.Header)
	require.Equal(t, expfmt.TypeTextPlain, format.FormatType(), resp.Header.Get("Content-Type"))

	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(strings.NewReader(body))
	require.NoError(t, err, body)
	checkFamilies(t, families)
}

func TestMetricsParseAsOpenMetrics(t *testing.T) {
	srv := httptest.NewServer(handler(fixture))
	defer srv.Close()
	resp, body := get(t, srv.URL+"/metrics", "Accept", "application/openmetrics-text;version=1.0.0,text/plain;q=0.5")
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Equal(t, expfmt.TypeOpenMetrics, expfmt.ResponseFormat(resp.Header).FormatType(), resp.Header.Get("Content-Type"))
	require.True(t, strings.HasSuffix(body, "# EOF\n"), "an OpenMetrics exposition ends with # EOF")
	require.Contains(t, body, "# TYPE prefork_requests counter\nprefork_requests_total 11\n")
	// The samples are those of the text format, which the parser checks.
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(strings.NewReader(strings.TrimSuffix(strings.ReplaceAll(body, "# TYPE prefork_requests counter", "# TYPE prefork_requests_total counter"), "# EOF\n")))
	require.NoError(t, err)
	require.Equal(t, 11.0, families["prefork_requests_total"].GetMetric()[0].GetCounter().GetValue())
}

func checkFamilies(t *testing.T, families map[string]*dto.MetricFamily) {
	t.Helper()
	value := func(name string, labels ...string) float64 {
		t.Helper()
		f := families[name]
		require.NotNil(t, f, "no family %s", name)
	metrics:
		for _, m := range f.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				found := false
				for _, l := range m.GetLabel() {
					found = found || l.GetName() == labels[i] && l.GetValue() == labels[i+1]
				}
				if !found {
					continue metrics
				}
			}
			switch f.GetType() {
			case dto.MetricType_COUNTER:
				return m.GetCounter().GetValue()
			default:
				return m.GetGauge().GetValue()
			}
		}
		t.Fatalf("no sample %s %v", name, labels)
		return 0
	}
	assert.Equal(t, 8.0, value("prefork_max_servers"))
	assert.Equal(t, 100.0, value("prefork_max_requests"))
	assert.Equal(t, 1.0, value("prefork_children", "state", "busy"))
	assert.Equal(t, 1.0, value("prefork_children", "state", "idle"))
	assert.Equal(t, 1.0, value("prefork_children", "state", "parked"))
	assert.Equal(t, 0.0, value("prefork_children", "state", "starting"))
	assert.Equal(t, 2.0, value("prefork_listen_queue", "socket", "web", "address", "tcp 127.0.0.1:9000"))
	assert.Equal(t, 4.0, value("prefork_listen_queue_max", "socket", "web", "address", "tcp 127.0.0.1:9000"))
	assert.Equal(t, 3.0, value("prefork_listen_queue", "socket", "web", "address", "tcp6 [::1]:9000"))
	assert.Len(t, families["prefork_listen_queue"].GetMetric(), 3, "no sample for a queue that cannot be read")
	assert.Equal(t, 0.0, value("prefork_listen_queue", "socket", `a "quoted" name`))
	assert.Equal(t, 1.0, value("prefork_listen_queue_max", "socket", `a "quoted" name`))
	assert.Equal(t, 11.0, value("prefork_requests_total"))
	assert.Equal(t, 5.0, value("prefork_children_started_total"))
	assert.Equal(t, 1.0, value("prefork_child_exits_total", "reason", "max_requests"))
	assert.Equal(t, 1.0, value("prefork_child_exits_total", "reason", "signaled"))
	assert.Equal(t, 0.0, value("prefork_child_exits_total", "reason", "crashed"))
	assert.Equal(t, 2.0, value("prefork_child_exits_total", "reason", "memory_limit"))
	assert.Equal(t, 0.0, value("prefork_child_exits_total", "reason", "max_lifetime"))
	assert.Equal(t, 1.0, value("prefork_max_servers_reached_total"))
	assert.Equal(t, 2.0, value("prefork_slow_requests_total"))
}

func TestJSON(t *testing.T) {
	srv := httptest.NewServer(handler(fixture))
	defer srv.Close()
	for name, req := range map[string][]string{
		"query":  {"/?format=json"},
		"accept": {"/", "Accept", "application/json"},
	} {
		t.Run(name, func(t *testing.T) {
			resp, body := get(t, srv.URL+req[0], req[1:]...)
			require.Equal(t, "application/json", resp.Header.Get("Content-Type"))
			var s prefork.Stats
			require.NoError(t, json.Unmarshal([]byte(body), &s))
			require.Equal(t, fixture(), s)
		})
	}
}

func TestText(t *testing.T) {
	srv := httptest.NewServer(handler(fixture))
	defer srv.Close()
	_, body := get(t, srv.URL+"/")
	assert.Contains(t, body, "children:")
	assert.Contains(t, body, "3 (idle 1, busy 1, parked 1)")
	assert.Contains(t, body, "2 (max 5)")
	assert.Contains(t, body, "4 sockets")
	assert.Regexp(t, `sockets:\s+web: tcp 127.0.0.1:9000, queue 2 \(max 4\)\n\s+a "quoted" name: unix /run/a.sock, queue 0 \(max 1\)\n`, body)
	assert.Contains(t, body, "unread: unix /run/b.sock, queue unknown (max unknown)")
	assert.Contains(t, body, "max requests 1, memory limit 2, signaled 1")
	assert.NotContains(t, body, "101", "one line per child only with ?full")

	_, full := get(t, srv.URL+"/?full")
	assert.Regexp(t, `101\s+busy\s+7\s+\S+\s+1.5s\s+127.0.0.1:50000\s+12.3 MiB\n`, full)
	assert.Regexp(t, `102\s+idle\s+3\s+\S+\s+-\s+-\s+9.0 MiB\n`, full)
	assert.Regexp(t, `103\s+parked\s+0\s+\S+\s+-\s+-\s+-\n`, full, "memory not known")
}

func TestNotRunningAndBadRequests(t *testing.T) {
	srv := httptest.NewServer(Handler(&prefork.Manager{}))
	defer srv.Close()
	_, body := get(t, srv.URL+"/")
	assert.Contains(t, body, "not running")
	resp, _ := get(t, srv.URL+"/nothing")
	assert.Equal(t, http.StatusNotFound, resp.StatusCode)
	post, err := http.Post(srv.URL+"/", "text/plain", nil)
	require.NoError(t, err)
	post.Body.Close()
	assert.Equal(t, http.StatusMethodNotAllowed, post.StatusCode)
}
