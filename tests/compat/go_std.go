// Goroutines, channels, timers, files and the Go runtime's use of threads,
// futexes, signals (preemption) and epoll, in a static Go binary.
package main

import (
	"fmt"
	"os"
	"runtime"
	"sort"
	"strings"
	"sync"
	"time"
)

func main() {
	data, err := os.ReadFile("/data/words.txt")
	if err != nil {
		fmt.Println("read:", err)
		os.Exit(1)
	}
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")

	// Fan out: one goroutine per line, counting words into a shared map.
	var mu sync.Mutex
	counts := map[string]int{}
	var wg sync.WaitGroup
	for _, l := range lines {
		wg.Add(1)
		go func(line string) {
			defer wg.Done()
			for _, w := range strings.Fields(line) {
				mu.Lock()
				counts[w]++
				mu.Unlock()
			}
		}(l)
	}
	wg.Wait()
	var repeated []string
	for w, n := range counts {
		if n > 1 {
			repeated = append(repeated, fmt.Sprintf("%s=%d", w, n))
		}
	}
	sort.Strings(repeated)
	fmt.Println("lines", len(lines), "distinct words", len(counts))
	fmt.Println("repeated:", strings.Join(repeated, " "))

	// A pipeline of channels.
	src := make(chan int)
	sq := make(chan int)
	go func() {
		for i := 1; i <= 100; i++ {
			src <- i
		}
		close(src)
	}()
	go func() {
		for v := range src {
			sq <- v * v
		}
		close(sq)
	}()
	sum := 0
	for v := range sq {
		sum += v
	}
	fmt.Println("sum of squares 1..100:", sum)

	// Timers and a busy goroutine that must be preempted.
	stop := make(chan struct{})
	spins := 0
	go func() {
		for {
			select {
			case <-stop:
				return
			default:
				spins++
			}
		}
	}()
	start := time.Now()
	timer := time.NewTimer(30 * time.Millisecond)
	ticker := time.NewTicker(5 * time.Millisecond)
	ticks := 0
loop:
	for {
		select {
		case <-ticker.C:
			ticks++
		case <-timer.C:
			break loop
		}
	}
	ticker.Stop()
	close(stop)
	elapsed := time.Since(start)
	fmt.Println("timer fired after 30 ms:", elapsed >= 30*time.Millisecond && elapsed < 2*time.Second)
	fmt.Println("ticker ticked:", ticks >= 2)

	// Many goroutines sleeping at once.
	var sleepers sync.WaitGroup
	for i := 0; i < 50; i++ {
		sleepers.Add(1)
		go func(i int) {
			defer sleepers.Done()
			time.Sleep(time.Duration(i%5) * time.Millisecond)
		}(i)
	}
	sleepers.Wait()
	fmt.Println("50 sleepers done")

	// Files.
	if err := os.MkdirAll("/tmp/go/x", 0o755); err != nil {
		fmt.Println("mkdir:", err)
	}
	if err := os.WriteFile("/tmp/go/x/f.txt", []byte("from go\n"), 0o644); err != nil {
		fmt.Println("write:", err)
	}
	b, err := os.ReadFile("/tmp/go/x/f.txt")
	fmt.Printf("read back %q %v\n", string(b), err)
	entries, _ := os.ReadDir("/data")
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	fmt.Println("/data:", strings.Join(names, " "))
	_, err = os.Stat("/tmp/go/missing")
	fmt.Println("missing:", os.IsNotExist(err))
	fmt.Println("GOOS", runtime.GOOS, "GOARCH", runtime.GOARCH)
	host, _ := os.Hostname()
	fmt.Println("hostname", host)
}
