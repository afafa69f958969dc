package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/api-gateway/api-gateway/extauthz"
	"github.com/api-gateway/api-gateway/internal/pipeline"
	"github.com/api-gateway/api-gateway/manage"
	"github.com/api-gateway/api-gateway/model"
	"github.com/api-gateway/api-gateway/waf"
)

// runValidate checks a declarative file offline with the checks serve runs on it: strict
// decoding, every object's validation, references between the file's objects, the serving
// components' validators and the whole-revision checks (offlineAPI). It prints one line per problem with the file,
// line, object and field, and exits 1 when there is any.
func runValidate(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("validate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	file := fs.String("f", "", "the declarative config file to check")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *file == "" {
		fmt.Fprintln(stderr, "validate: -f FILE is required")
		return 2
	}
	data, err := os.ReadFile(*file)
	if err != nil {
		fmt.Fprintln(stderr, "validate:", err)
		return 1
	}
	api, closeAPI, err := offlineAPI()
	if err != nil {
		fmt.Fprintln(stderr, "validate:", err)
		return 2
	}
	defer closeAPI()
	objs, probs := api.CheckFileData(context.Background(), *file, data)
	if len(probs) > 0 {
		for _, p := range probs {
			fmt.Fprintln(stderr, p.String())
		}
		fmt.Fprintf(stderr, "%d problem(s) in %s\n", len(probs), *file)
		return 1
	}
	fmt.Fprintf(stdout, "%s: %d object(s), valid\n", *file, len(objs))
	return 0
}

// offlineAPI is a management API running the checks serve runs on a file, with nothing
// stored or served: the validators the serving components register (xDS routes, WAF rule
// sets, CEL policies) and the whole-revision checks of the consumers that can refuse a
// revision (xDS, ext_authz, the rate-limit service). Its configuration is the environment's, as serve's is.
func offlineAPI() (*manage.API, func(), error) {
	cfg, err := loadConfig()
	if err != nil {
		return nil, nil, err
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	reg := prometheus.NewRegistry()
	xs, err := newXDSServer(cfg, log, reg)
	if err != nil {
		return nil, nil, err
	}
	wafs := waf.NewRegistry(waf.RegistryOptions{Logger: log})
	eng, err := extauthz.New(extauthz.Options{Logger: log, Registerer: reg, WAF: wafs})
	if err != nil {
		xs.Close()
		return nil, nil, err
	}
	pipe := pipeline.New(nil, log, xs, eng, newRateLimitConsumer(nil, log))
	pipe.SetTranslate(translateOptions(cfg))
	api := manage.New(manage.Options{Model: pipe, Logger: log})
	addConsumerChecks(api, pipe)
	return api, func() { xs.Close() }, nil
}

// addConsumerChecks makes the pipeline's consumers' object checks (pipeline.ObjectChecker)
// the API's validator of every kind: serve and validate run the same checks, from the
// consumers that would apply the object.
func addConsumerChecks(api *manage.API, pipe *pipeline.Pipeline) {
	for _, k := range model.Kinds {
		api.AddValidator(k, pipe.CheckObject)
	}
}

// applyConfigFile applies the declarative file through the API's validation; a bad file stops
// the start (or is ignored on SIGHUP) and changes nothing.
// At start (!running) the file is only stored: the pipeline's first Sync applies it.
func applyConfigFile(ctx context.Context, a *app, path string, running bool) error {
	apply := a.api.ApplyFile
	if !running {
		apply = a.api.StoreFile
	}
	rev, err := apply(ctx, path)
	if err != nil {
		var fe manage.FileError
		if errors.As(err, &fe) {
			for _, p := range fe {
				a.log.Error("config file problem", "file", p.File, "line", p.Line, "object", p.Object, "field", p.Field, "problem", p.Problem)
			}
			return fmt.Errorf("config file %s has %d problem(s):\n%s", path, len(fe), fe.Error())
		}
		return fmt.Errorf("config file %s: %w", path, err)
	}
	a.log.Info("config file applied", "file", path, "revision", rev)
	return nil
}
