package main

import (
	"context"
	"log/slog"

	"github.com/api-gateway/api-gateway/store"
)

func openRedisStore(ctx context.Context, url string, log *slog.Logger) (store.Store, error) {
	return store.OpenRedis(ctx, url, log)
}
