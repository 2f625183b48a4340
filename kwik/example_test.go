package kwik_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"path/filepath"

	"github.com/kwikfs/kwikfs/internal/certgen"
	"github.com/kwikfs/kwikfs/kwik"
)

// serveEcho accepts sessions on l and echoes every stream until l closes.
func serveEcho(l *kwik.Listener) {
	for {
		s, err := l.Accept(context.Background())
		if err != nil {
			return
		}
		go func() {
			defer s.Close()
			for {
				st, err := s.AcceptStream(context.Background())
				if err != nil {
					return
				}
				go func() {
					io.Copy(st, st)
					st.Close()
				}()
			}
		}()
	}
}

func ExampleDial() {
	certs, err := certgen.Generate(nil)
	if err != nil {
		log.Fatal(err)
	}
	srvTLS, _ := certs.ServerTLS()
	cliTLS, _ := certs.ClientTLS()

	l, err := kwik.Listen("127.0.0.1:0", &kwik.Config{TLSConfig: srvTLS})
	if err != nil {
		log.Fatal(err)
	}
	defer l.Close()
	go serveEcho(l)

	ctx := context.Background()
	s, err := kwik.Dial(ctx, l.Addr().String(), &kwik.Config{TLSConfig: cliTLS})
	if err != nil {
		log.Fatal(err)
	}
	defer s.Close()
	st, err := s.OpenStreamSync(ctx)
	if err != nil {
		log.Fatal(err)
	}
	st.Write([]byte("hello, kwik"))
	st.Close() // FIN: the server's io.Copy ends
	reply, err := io.ReadAll(st)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("stream %d: %s\n", st.StreamID(), reply)
	// Output: stream 0: hello, kwik
}

func ExampleListener_Accept() {
	certs, _ := certgen.Generate(nil)
	srvTLS, _ := certs.ServerTLS()
	cliTLS, _ := certs.ClientTLS()
	l, err := kwik.Listen("127.0.0.1:0", &kwik.Config{TLSConfig: srvTLS, MaxIncomingStreams: 16})
	if err != nil {
		log.Fatal(err)
	}
	defer l.Close()

	ctx := context.Background()
	go func() {
		s, err := kwik.Dial(ctx, l.Addr().String(), &kwik.Config{TLSConfig: cliTLS})
		if err != nil {
			log.Fatal(err)
		}
		st, _ := s.OpenStreamSync(ctx)
		st.Write([]byte("request"))
		st.Close()
		io.ReadAll(st) // wait for the server to finish the stream
		s.Close()
	}()

	s, err := l.Accept(ctx)
	if err != nil {
		log.Fatal(err)
	}
	defer s.Close()
	st, err := s.AcceptStream(ctx)
	if err != nil {
		log.Fatal(err)
	}
	req, _ := io.ReadAll(st)
	st.Close()
	fmt.Printf("%s on stream %d\n", req, st.StreamID())
	// Output: request on stream 0
}

func ExampleStream_CancelRead() {
	certs, _ := certgen.Generate(nil)
	srvTLS, _ := certs.ServerTLS()
	cliTLS, _ := certs.ClientTLS()
	l, _ := kwik.Listen("127.0.0.1:0", &kwik.Config{TLSConfig: srvTLS})
	defer l.Close()
	ctx := context.Background()
	go func() {
		s, err := l.Accept(ctx)
		if err != nil {
			return
		}
		defer s.Close()
		st, _ := s.AcceptStream(ctx)
		st.Read(make([]byte, 1))
		st.CancelRead(0x100) // enough: the writer fails with code 0x100
		<-s.Context().Done()
	}()

	s, err := kwik.Dial(ctx, l.Addr().String(), &kwik.Config{TLSConfig: cliTLS})
	if err != nil {
		log.Fatal(err)
	}
	defer s.Close()
	st, _ := s.OpenStreamSync(ctx)
	buf := make([]byte, 64<<10)
	for {
		if _, err := st.Write(buf); err != nil {
			fmt.Println(err)
			break
		}
	}
	// Output: kwik: stream 0 canceled by remote with code 0x100
}

func ExampleLoadClientTLS() {
	dir, err := os.MkdirTemp("", "kwik-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	certs, _ := certgen.Generate([]string{"localhost"})
	if err := certs.WriteDir(dir); err != nil {
		log.Fatal(err)
	}

	srvTLS, err := kwik.LoadServerTLS(filepath.Join(dir, certgen.CertFile), filepath.Join(dir, certgen.KeyFile))
	if err != nil {
		log.Fatal(err)
	}
	// The server name comes from the dialled address ("localhost").
	cliTLS, err := kwik.LoadClientTLS(filepath.Join(dir, certgen.CAFile), "")
	if err != nil {
		log.Fatal(err)
	}
	l, err := kwik.Listen("localhost:0", &kwik.Config{TLSConfig: srvTLS})
	if err != nil {
		log.Fatal(err)
	}
	defer l.Close()
	go serveEcho(l)

	_, port, _ := net.SplitHostPort(l.Addr().String())
	s, err := kwik.Dial(context.Background(), "localhost:"+port, &kwik.Config{TLSConfig: cliTLS})
	if err != nil {
		log.Fatal(err)
	}
	defer s.Close()
	fmt.Println("verified", s.RemoteAddr().Network())
	// Output: verified udp
}
