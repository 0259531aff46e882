package xds

import (
	"context"
	"fmt"
	"log/slog"
)

// cacheLogger adapts slog to go-control-plane's logger. Its Info messages
// (stale nonces, watches opened) are routine, so they go to Debug.
type cacheLogger struct {
	log *slog.Logger
}

func (l cacheLogger) Debugf(format string, args ...any) { l.logf(slog.LevelDebug, format, args) }
func (l cacheLogger) Infof(format string, args ...any)  { l.logf(slog.LevelDebug, format, args) }
func (l cacheLogger) Warnf(format string, args ...any)  { l.logf(slog.LevelWarn, format, args) }
func (l cacheLogger) Errorf(format string, args ...any) { l.logf(slog.LevelError, format, args) }

func (l cacheLogger) logf(level slog.Level, format string, args []any) {
	if !l.log.Enabled(context.Background(), level) {
		return
	}
	l.log.Log(context.Background(), level, fmt.Sprintf(format, args...), "component", "go-control-plane")
}
