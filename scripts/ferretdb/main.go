// Command ferretdb-runner runs FerretDB (a MongoDB wire-protocol server) with its SQLite
// backend, for local development and CI of metricsctl. It is built by scripts/services.sh.
//
// Why a wrapper instead of `go install .../cmd/ferretdb`: that binary expects a generated
// build/version/version.txt, which is absent from the module download, and panics at start.
// The embeddable package github.com/FerretDB/FerretDB/ferretdb does not need it.
//
// Usage:
//
//	ferretdb-runner -listen 127.0.0.1:27017 -data-dir /abs/path   # serve until SIGINT/SIGTERM
//	ferretdb-runner -ping mongodb://127.0.0.1:27017 [-timeout 2s]  # exit 0 if `ping` answers
//	ferretdb-runner -version                                       # print the FerretDB version
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"syscall"
	"time"

	"github.com/FerretDB/FerretDB/ferretdb"
	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/mongo"
	"go.mongodb.org/mongo-driver/mongo/options"
)

const ferretModule = "github.com/FerretDB/FerretDB"

func main() {
	listen := flag.String("listen", "127.0.0.1:27017", "TCP address to serve the MongoDB wire protocol on")
	dataDir := flag.String("data-dir", "", "directory for the SQLite databases (created if missing)")
	logLevel := flag.String("log-level", "info", "log level: debug, info, warn, error")
	ping := flag.String("ping", "", "instead of serving, send a `ping` command to this MongoDB URI and exit")
	timeout := flag.Duration("timeout", 2*time.Second, "time limit for -ping")
	showVersion := flag.Bool("version", false, "print the FerretDB version and exit")
	flag.Parse()

	switch {
	case *showVersion:
		fmt.Println(ferretVersion())
	case *ping != "":
		if err := runPing(*ping, *timeout); err != nil {
			fmt.Fprintf(os.Stderr, "ferretdb-runner: ping %s: %s\n", *ping, err)
			os.Exit(1)
		}
		fmt.Println("ok")
	default:
		if err := serve(*listen, *dataDir, *logLevel); err != nil {
			fmt.Fprintf(os.Stderr, "ferretdb-runner: %s\n", err)
			os.Exit(1)
		}
	}
}

// ferretVersion reads the FerretDB module version from the build info: the embedded
// package itself reports "unknown" (it only reads version.txt for its own main module).
func ferretVersion() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, dep := range bi.Deps {
			if dep.Path == ferretModule {
				if dep.Replace != nil {
					return dep.Replace.Version
				}
				return dep.Version
			}
		}
	}
	return "unknown"
}

func serve(listen, dataDir, logLevel string) error {
	if dataDir == "" {
		return errors.New("-data-dir is required")
	}

	var level slog.Level
	if err := level.UnmarshalText([]byte(logLevel)); err != nil {
		return fmt.Errorf("-log-level: %w", err)
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	slog.SetDefault(logger)

	// SQLite URLs must be absolute-or-relative directories ending with a slash;
	// an absolute path keeps it independent of the working directory.
	abs, err := filepath.Abs(dataDir)
	if err != nil {
		return err
	}
	if err = os.MkdirAll(abs, 0o755); err != nil {
		return err
	}
	sqliteURL := "file:" + abs + "/"

	// The embedded package never starts the telemetry reporter and keeps its state in
	// memory only (no state.json); DO_NOT_TRACK is set by services.sh as a second guard.
	f, err := ferretdb.New(&ferretdb.Config{
		Listener:  ferretdb.ListenerConfig{TCP: listen},
		Logger:    logger,
		Handler:   "sqlite",
		SQLiteURL: sqliteURL,
	})
	if err != nil {
		return err
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	logger.Info("Starting FerretDB "+ferretVersion()+" (embedded)",
		slog.String("listen", listen), slog.String("handler", "sqlite"), slog.String("sqlite_url", sqliteURL),
		slog.Int("pid", os.Getpid()))

	err = f.Run(ctx)
	logger.Info("FerretDB stopped")
	return err
}

// runPing connects with the Go MongoDB driver (already a FerretDB dependency) and runs `ping`,
// so services.sh can check readiness without installing mongosh.
func runPing(uri string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()

	opts := options.Client().ApplyURI(uri).SetServerSelectionTimeout(timeout).SetConnectTimeout(timeout)
	client, err := mongo.Connect(ctx, opts)
	if err != nil {
		return err
	}
	defer func() { _ = client.Disconnect(context.Background()) }()

	return client.Database("admin").RunCommand(ctx, bson.D{{Key: "ping", Value: 1}}).Err()
}
