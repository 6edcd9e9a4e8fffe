package certs

import (
	"context"
	"log/slog"
	"path/filepath"
	"time"

	"github.com/fsnotify/fsnotify"
)

// Run watches the directories until ctx ends. Events are debounced; a
// periodic poll catches anything the watcher misses.
func (s *Store) Run(ctx context.Context) error {
	var w *fsnotify.Watcher
	var err error
	if !s.o.noWatch {
		w, err = fsnotify.NewWatcher()
	}
	if err != nil {
		s.log.Warn("file watcher unavailable, relying on polling", "error", err)
		w = nil
	} else if w != nil {
		defer w.Close()
	}
	// A directory that does not exist yet (an optional volume, a trust
	// bundle written later) is watched as soon as it appears.
	var pending []string
	watch := func(dirs []string, level slog.Level) {
		if w == nil {
			return
		}
		var still []string
		for _, d := range dirs {
			if err := w.Add(d); err != nil {
				still = append(still, d)
				s.log.Log(context.Background(), level, "cannot watch directory yet, polling it", "dir", d, "error", err)
			}
		}
		pending = still
	}
	watch(s.watchDirs(), slog.LevelInfo)
	var events chan fsnotify.Event
	var errs chan error
	if w != nil {
		events, errs = w.Events, w.Errors
	}
	var poll <-chan time.Time
	if s.o.PollInterval > 0 {
		t := time.NewTicker(s.o.PollInterval)
		defer t.Stop()
		poll = t.C
	}
	debounce := time.NewTimer(time.Hour)
	debounce.Stop()
	defer debounce.Stop()
	var burst time.Time // first event of the current burst
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-events:
			if !ok {
				events = nil
				continue
			}
			s.log.Debug("file event", "name", ev.Name, "op", ev.Op.String())
			// Any change in a watched directory: kubelet's ..data swap shows
			// up as Create/Rename/Remove of symlinks, an editor or the agent
			// as Write/Rename. The reload itself compares content. A
			// directory that never goes quiet still reloads every 5 debounces.
			now := time.Now()
			if burst.IsZero() {
				burst = now
			}
			if now.Sub(burst) > 5*s.o.Debounce {
				burst = time.Time{}
				debounce.Stop()
				_ = s.Reload()
				continue
			}
			debounce.Reset(s.o.Debounce)
		case err, ok := <-errs:
			if !ok {
				errs = nil
				continue
			}
			s.log.Warn("file watcher error", "error", err)
			debounce.Reset(s.o.Debounce)
		case <-debounce.C:
			burst = time.Time{}
			s.log.Debug("reloading after file events")
			_ = s.Reload()
		case <-poll:
			if len(pending) > 0 {
				watch(pending, slog.LevelDebug)
			}
			_ = s.Reload()
		}
	}
}

func (s *Store) watchDirs() []string {
	seen := map[string]bool{}
	var out []string
	add := func(d string) {
		d = filepath.Clean(d)
		if !seen[d] {
			seen[d] = true
			out = append(out, d)
		}
	}
	add(s.meshDir())
	if s.o.TrustBundle != "" {
		add(filepath.Dir(s.o.TrustBundle))
	}
	for _, d := range s.o.ExternalDirs {
		add(d)
	}
	return out
}
