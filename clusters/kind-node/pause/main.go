// pause: the sandbox process of every pod in the offline kind node image, and the probe
// `proxysuite kind setup-engine` runs to find out whether privileged containers start.
// It waits for SIGINT/SIGTERM and exits 0; `-v` prints its name and exits (the probe).
// Kubernetes' own pause is C (build/pause/linux/pause.c); this does the same job without a C toolchain.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "-v" {
		os.Stdout.WriteString("pause (proxysuite)\n")
		return
	}
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGINT, syscall.SIGTERM)
	// As PID 1 of a pod's sandbox it inherits orphans of the pod's processes and must reap them.
	go reap()
	<-ch
}

func reap() {
	sig := make(chan os.Signal, 16)
	signal.Notify(sig, syscall.SIGCHLD)
	for range sig {
		for {
			var status syscall.WaitStatus
			pid, err := syscall.Wait4(-1, &status, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}
