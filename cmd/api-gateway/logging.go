package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"

	"github.com/api-gateway/api-gateway/internal/telemetry"
)

func newLogger(level string, w io.Writer) *slog.Logger {
	return telemetry.NewLogger(level, w)
}

// redisLogger sends go-redis's own messages (dial failures during an outage, ...) to the
// JSON log at warn level instead of plain text on stderr.
type redisLogger struct{ log *slog.Logger }

func (l redisLogger) Printf(ctx context.Context, format string, v ...any) {
	l.log.WarnContext(ctx, fmt.Sprintf(format, v...), "component", "redis-client")
}
