package filter

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// TestExampleScripts checks that the example filters shipped for operators
// are executable POSIX shell scripts.
func TestExampleScripts(t *testing.T) {
	dir := filepath.Join("..", "..", "deploy", "examples", "filters")
	for _, name := range []string{"clamav.sh", "spamassassin.sh"} {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(dir, name)
			st, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			if st.Mode().Perm()&0o111 == 0 {
				t.Errorf("%s is not executable (%v)", path, st.Mode())
			}
			if out, err := exec.Command("/bin/sh", "-n", path).CombinedOutput(); err != nil {
				t.Errorf("sh -n %s: %v\n%s", path, err, out)
			}
		})
	}
}
