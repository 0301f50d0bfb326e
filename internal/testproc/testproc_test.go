package testproc

import (
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// The helper process starts a child through a Launcher and is then killed
// with SIGKILL: the child must die too.
func TestChildDiesWithParent(t *testing.T) {
	if os.Getenv("TESTPROC_HELPER") == "1" {
		l := NewLauncher()
		cmd := exec.Command("sleep", "60")
		if err := l.Start(cmd, syscall.SIGKILL); err != nil {
			os.Exit(3)
		}
		os.Stdout.WriteString(strconv.Itoa(cmd.Process.Pid) + "\n")
		time.Sleep(time.Minute)
		return
	}
	helper := exec.Command(os.Args[0], "-test.run=^TestChildDiesWithParent$")
	helper.Env = append(os.Environ(), "TESTPROC_HELPER=1")
	out, err := helper.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := helper.Start(); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 32)
	n, _ := out.Read(buf)
	pid, err := strconv.Atoi(string(buf[:n-1]))
	if err != nil {
		helper.Process.Kill()
		t.Fatalf("helper said %q", buf[:n])
	}
	helper.Process.Kill()
	helper.Wait()
	for range 100 {
		if syscall.Kill(pid, 0) != nil {
			return // gone
		}
		time.Sleep(50 * time.Millisecond)
	}
	syscall.Kill(pid, syscall.SIGKILL)
	t.Fatalf("child %d outlived its killed parent", pid)
}
