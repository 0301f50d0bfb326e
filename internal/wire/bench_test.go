package wire

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"io"
	"math/rand"
	"testing"
)

// typicalMessage is a 1 MiB message: a header block, a text part with a
// few lines starting with '.', and a base64 attachment in 76-byte lines.
func typicalMessage() []byte {
	var b bytes.Buffer
	b.WriteString("From: Alice <alice@example.com>\r\nTo: Bob <bob@example.com>\r\nSubject: report\r\n" +
		"Message-ID: <bench@example.com>\r\nMIME-Version: 1.0\r\n" +
		"Content-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n--b1\r\nContent-Type: text/plain\r\n\r\n")
	for i := 0; i < 200; i++ {
		b.WriteString("The quick brown fox jumps over the lazy dog, again and again and again.\r\n")
		if i%50 == 0 {
			b.WriteString(".a line that starts with a dot\r\n")
		}
	}
	b.WriteString("--b1\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n")
	raw := make([]byte, 57)
	rng := rand.New(rand.NewSource(1))
	for b.Len() < 1<<20-100 {
		rng.Read(raw)
		b.WriteString(base64.StdEncoding.EncodeToString(raw))
		b.WriteString("\r\n")
	}
	b.WriteString("--b1--\r\n")
	return b.Bytes()
}

func BenchmarkDataReader(b *testing.B) {
	msg := typicalMessage()
	var wire bytes.Buffer
	if _, err := WriteData(&wire, bytes.NewReader(msg), DataWriterOptions{}); err != nil {
		b.Fatal(err)
	}
	stream := wire.Bytes()
	src := bytes.NewReader(stream)
	br := bufio.NewReaderSize(src, 32<<10)
	buf := make([]byte, 32<<10)
	b.SetBytes(int64(len(msg)))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		src.Reset(stream)
		br.Reset(src)
		d := NewDataReader(br, 0, false)
		for {
			_, err := d.Read(buf)
			if err == io.EOF {
				break
			}
			if err != nil {
				b.Fatal(err)
			}
		}
		if d.Size() != int64(len(msg)) {
			b.Fatalf("decoded %d bytes, want %d", d.Size(), len(msg))
		}
	}
}

func BenchmarkWriteData(b *testing.B) {
	msg := typicalMessage()
	src := bytes.NewReader(msg)
	hdr := []byte("X-Filtered: by sluice\r\n")
	b.SetBytes(int64(len(msg)))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		src.Reset(msg)
		if _, err := WriteData(io.Discard, src, DataWriterOptions{Header: hdr}); err != nil {
			b.Fatal(err)
		}
	}
}
