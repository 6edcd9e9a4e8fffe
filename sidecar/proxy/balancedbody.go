package proxy

import (
	"io"
	"sync"
)

// replayBody lets a request whose connection failed go to another endpoint:
// the transport closes a request's body when it fails, so Close does nothing
// until the body is handed over to a transport that got a response (streams
// send on after that); a body already read from is never replayed. Its
// methods accept a nil receiver (no body).
type replayBody struct {
	io.ReadCloser
	mu     sync.Mutex
	read   bool
	handed bool
}

func (b *replayBody) Read(p []byte) (int, error) {
	b.mu.Lock()
	b.read = true
	b.mu.Unlock()
	return b.ReadCloser.Read(p)
}

func (b *replayBody) Close() error {
	b.mu.Lock()
	handed := b.handed
	b.mu.Unlock()
	if handed {
		return b.ReadCloser.Close()
	}
	return nil
}

func (b *replayBody) handOver() {
	if b != nil {
		b.mu.Lock()
		b.handed = true
		b.mu.Unlock()
	}
}

func (b *replayBody) started() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.read
}

func (b *replayBody) closeUnderlying() {
	if b != nil {
		_ = b.ReadCloser.Close()
	}
}

// doneBody ends the balancer's count of a request when its response ends
// (streams stay counted while they run).
type doneBody struct {
	io.ReadCloser
	once sync.Once
	done func()
}

func (b *doneBody) Close() error {
	err := b.ReadCloser.Close()
	b.once.Do(b.done)
	return err
}
