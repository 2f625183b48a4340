package kwik_test

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"io"
	"log"

	"github.com/kwikfs/kwikfs/internal/certgen"
	"github.com/kwikfs/kwikfs/kwik"
)

func ExampleSession_AddPath() {
	certs, err := certgen.Generate(nil)
	if err != nil {
		log.Fatal(err)
	}
	srvTLS, _ := certs.ServerTLS()
	cliTLS, _ := certs.ClientTLS()

	// A secondary and its primary share the cluster key.
	sec, err := kwik.ListenSecondary("127.0.0.1:0", &kwik.Config{TLSConfig: srvTLS, VerifyKeys: []ed25519.PublicKey{certs.SigningKey.Public().(ed25519.PublicKey)}})
	if err != nil {
		log.Fatal(err)
	}
	defer sec.Close()
	l, err := kwik.Listen("127.0.0.1:0", &kwik.Config{TLSConfig: srvTLS, SigningKey: certs.SigningKey})
	if err != nil {
		log.Fatal(err)
	}
	defer l.Close()

	ctx := context.Background()
	cli, err := kwik.Dial(ctx, l.Addr().String(), &kwik.Config{TLSConfig: cliTLS})
	if err != nil {
		log.Fatal(err)
	}
	defer cli.Close()
	s, err := l.Accept(ctx)
	if err != nil {
		log.Fatal(err)
	}
	defer s.Close()

	// The client dials the secondary and presents the primary's token.
	id, err := s.AddPath(ctx, sec.AdvertisedAddr())
	if err != nil {
		log.Fatal(err)
	}
	ev, _ := s.NextPathEvent(ctx)
	fmt.Printf("path %d is %v; event: path %d %v\n", id, s.Stats().Paths[1].State, ev.Path, ev.State)
	// Output: path 1 is up; event: path 1 up
}

func ExampleSession_SendRawData() {
	certs, err := certgen.Generate(nil)
	if err != nil {
		log.Fatal(err)
	}
	srvTLS, _ := certs.ServerTLS()
	cliTLS, _ := certs.ClientTLS()
	sec, err := kwik.ListenSecondary("127.0.0.1:0", &kwik.Config{TLSConfig: srvTLS, VerifyKeys: []ed25519.PublicKey{certs.SigningKey.Public().(ed25519.PublicKey)}})
	if err != nil {
		log.Fatal(err)
	}
	defer sec.Close()
	l, err := kwik.Listen("127.0.0.1:0", &kwik.Config{TLSConfig: srvTLS, SigningKey: certs.SigningKey})
	if err != nil {
		log.Fatal(err)
	}
	defer l.Close()

	// The secondary writes what each verified command asks for, and only
	// within the command's grant.
	go func() {
		for {
			cmd, err := sec.AcceptCommand(context.Background())
			if err != nil {
				return
			}
			cmd.Write(cmd.Payload()) // here the payload is the data itself
		}
	}()

	ctx := context.Background()
	cli, err := kwik.Dial(ctx, l.Addr().String(), &kwik.Config{TLSConfig: cliTLS})
	if err != nil {
		log.Fatal(err)
	}
	defer cli.Close()
	s, err := l.Accept(ctx)
	if err != nil {
		log.Fatal(err)
	}
	defer s.Close()
	path, err := s.AddPath(ctx, sec.AdvertisedAddr())
	if err != nil {
		log.Fatal(err)
	}

	// The primary writes the first bytes of a stream itself and delegates
	// the next ones to the secondary: it reserves them (flow control) and
	// grants them in a relayed command.
	st, _ := s.OpenStreamSync(ctx)
	st.Write([]byte("hello, "))
	off, n, err := st.Reserve(ctx, 5)
	if err != nil {
		log.Fatal(err)
	}
	grant := kwik.Grant{StreamID: st.StreamID(), Offset: off, Length: n}
	if err := s.SendRawData(path, grant, []byte("world")); err != nil {
		log.Fatal(err)
	}
	st.Close()

	// The client sees one ordinary stream.
	in, _ := cli.AcceptStream(ctx)
	data, _ := io.ReadAll(in)
	fmt.Printf("%s\n", data)

	// The primary learns from the client's reports who delivered what.
	d, err := st.WaitDelivered(ctx, off+n)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("complete %v: %d bytes from the primary, %d from the secondary\n", d.Complete, d.ByPath[0], d.ByPath[path])
	// Output:
	// hello, world
	// complete true: 7 bytes from the primary, 5 from the secondary
}
