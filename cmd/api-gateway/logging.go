package main

import (
	"io"
	"log/slog"

	"github.com/api-gateway/api-gateway/internal/telemetry"
)

func newLogger(level string, w io.Writer) *slog.Logger {
	return telemetry.NewLogger(level, w)
}
