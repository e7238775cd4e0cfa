// A Go net/http server that drains the way corral expects (docs/drain.md).
//
//	go build -o server . && corral run --listen 8000 -i 2 -- ./server
//
// It serves on corral's socket (fd 3, systemd's LISTEN_FDS protocol). srv.Shutdown alone
// (and SetKeepAlivesEnabled(false)) close idle keep-alive connections at once, which
// races clients sending their next request on them; so on SIGTERM it first answers every
// request with `Connection: close` for a moment (kept-alive clients reconnect, to another
// worker), then shuts down (stop accepting, finish in-flight requests, exit).
package main

import (
	"context"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"
	"time"
)

// drainGrace is how long kept-alive clients get `Connection: close` answers before the
// server closes what is still idle.
const drainGrace = time.Second

func listener() (net.Listener, error) {
	if os.Getenv("LISTEN_FDS") != "" {
		return net.FileListener(os.NewFile(3, "corral"))
	}
	port := os.Getenv("PORT")
	if port == "" {
		port = "8000"
	}
	return net.Listen("tcp", "127.0.0.1:"+port)
}

func main() {
	ln, err := listener()
	if err != nil {
		log.Fatal(err)
	}
	var draining atomic.Bool
	app := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "pid=%d\n", os.Getpid())
	})
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if draining.Load() {
				w.Header().Set("Connection", "close")
			}
			app.ServeHTTP(w, r)
		}),
		IdleTimeout: 5 * time.Second,
	}
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	done := make(chan struct{})
	go func() {
		<-stop
		draining.Store(true)
		time.Sleep(drainGrace)
		ctx, cancel := context.WithTimeout(context.Background(), 8*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			log.Print(err)
		}
		close(done)
	}()
	if err := srv.Serve(ln); err != http.ErrServerClosed {
		log.Fatal(err)
	}
	<-done
}
