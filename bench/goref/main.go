// goref: the Go reference for `python -m bench.rotator --peers`.
//
// Three roles on one binary, so the bench's peers and its bed run the same
// well-kept code (elazarl/goproxy, the proxy library mubeng is built on):
//
//	goref origin   ADDR            an HTTP/1.1 origin answering "ok\n", kept alive
//	goref upstream ADDR            a plain forward proxy (one of the bed's upstreams)
//	goref rotate   ADDR UP [UP...] a forward proxy that sends each request through
//	                               the next upstream in turn, as mubeng's rotator does
package main

import (
	"fmt"
	"log"
	"net/http"
	"net/url"
	"os"
	"sync/atomic"

	"github.com/elazarl/goproxy"
)

func main() {
	if len(os.Args) < 3 {
		fmt.Fprintln(os.Stderr, "usage: goref origin|upstream|rotate ADDR [UPSTREAM...]")
		os.Exit(2)
	}
	role, addr := os.Args[1], os.Args[2]
	var handler http.Handler
	switch role {
	case "origin":
		handler = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Length", "3")
			_, _ = w.Write([]byte("ok\n"))
		})
	case "upstream":
		handler = goproxy.NewProxyHttpServer()
	case "rotate":
		handler = rotator(os.Args[3:])
	default:
		fmt.Fprintf(os.Stderr, "goref: unknown role %q\n", role)
		os.Exit(2)
	}
	log.Fatal(http.ListenAndServe(addr, handler))
}

// rotator: each request leaves through the next upstream, on the kept-alive
// connections net/http's Transport holds per upstream.
func rotator(upstreams []string) http.Handler {
	urls := make([]*url.URL, 0, len(upstreams))
	for _, u := range upstreams {
		parsed, err := url.Parse(u)
		if err != nil {
			log.Fatalf("goref: bad upstream %q: %v", u, err)
		}
		urls = append(urls, parsed)
	}
	if len(urls) == 0 {
		log.Fatal("goref: rotate needs at least one upstream")
	}
	var turn atomic.Uint64
	proxy := goproxy.NewProxyHttpServer()
	proxy.Tr = &http.Transport{
		Proxy: func(*http.Request) (*url.URL, error) {
			return urls[turn.Add(1)%uint64(len(urls))], nil
		},
		MaxIdleConnsPerHost: 256,
	}
	return proxy
}
