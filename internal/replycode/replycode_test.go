package replycode

import "testing"

func TestParse(t *testing.T) {
	cases := []struct {
		in       string
		code     int
		last, ok bool
	}{
		{"250 ok", 250, true, true},
		{"250", 250, true, true},
		{"250-PIPELINING", 250, false, true},
		{"099 odd but well-formed", 99, true, true},
		{"25 short", 0, false, false},
		{"2500 four digits", 0, false, false},
		{"25x no", 0, false, false},
		{"", 0, false, false},
		{"abc", 0, false, false},
		{"250\tok", 0, false, false},
	}
	for _, c := range cases {
		code, last, ok := Parse(c.in)
		if code != c.code || last != c.last || ok != c.ok {
			t.Errorf("Parse(%q) = %d, %v, %v; want %d, %v, %v", c.in, code, last, ok, c.code, c.last, c.ok)
		}
	}
}

func TestFinal(t *testing.T) {
	cases := []struct {
		in    string
		class int
		ok    bool
	}{
		{"250 2.0.0 dropped", 2, true},
		{"451", 4, true},
		{"554 5.7.1 no", 5, true},
		{"550-more to come", 0, false},
		{"354 go ahead", 0, false},
		{"199 nothing", 0, false},
		{"Content Rejected", 0, false},
		{"5500 no", 0, false},
	}
	for _, c := range cases {
		class, ok := Final(c.in)
		if class != c.class || ok != c.ok {
			t.Errorf("Final(%q) = %d, %v; want %d, %v", c.in, class, ok, c.class, c.ok)
		}
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{"250 ok", "250-x", "", "999", "12"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		code, last, ok := Parse(s)
		if !ok {
			if code != 0 || last {
				t.Fatalf("Parse(%q) = %d, %v on failure", s, code, last)
			}
			return
		}
		if code < 0 || code > 999 {
			t.Fatalf("Parse(%q) code %d", s, code)
		}
		if class, fok := Final(s); fok && (class != code/100 || !last) {
			t.Fatalf("Final(%q) = %d for code %d last %v", s, class, code, last)
		}
	})
}
