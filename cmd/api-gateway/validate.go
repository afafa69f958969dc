package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"regexp"
	"slices"
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/api-gateway/api-gateway/envoy"
	"github.com/api-gateway/api-gateway/extauthz"
	"github.com/api-gateway/api-gateway/internal/pipeline"
	"github.com/api-gateway/api-gateway/manage"
	"github.com/api-gateway/api-gateway/model"
	"github.com/api-gateway/api-gateway/waf"
)

// runValidate checks a declarative file offline with the checks serve runs on it: strict
// decoding, every object's validation, references between the file's objects, the serving
// components' validators and the whole-revision checks (offlineAPI). It prints one line per problem with the file,
// line, object and field, and exits 1 when there is any. A valid file gets, before its valid
// line, the count of the routes proxyless gRPC clients will not get, or with -proxyless a
// notice per route (proxylessNotices): exit 0.
func runValidate(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("validate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	file := fs.String("f", "", "the declarative config file to check")
	proxyless := fs.Bool("proxyless", false, "list each route proxyless gRPC clients will not get, with the reason (default: their count)")
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
	api, pipe, closeAPI, err := offlineAPI()
	if err != nil {
		fmt.Fprintln(stderr, "validate:", err)
		return 2
	}
	defer closeAPI()
	ctx := context.Background()
	objs, probs := api.CheckFileData(ctx, *file, data)
	if len(probs) > 0 {
		for _, p := range probs {
			fmt.Fprintln(stderr, p.String())
		}
		fmt.Fprintf(stderr, "%d problem(s) in %s\n", len(probs), *file)
		return 1
	}
	notices, err := proxylessNotices(ctx, api, pipe, *file, objs)
	if err != nil {
		fmt.Fprintln(stderr, "validate:", err)
		return 2
	}
	w := bufio.NewWriter(stdout)
	switch {
	case *proxyless:
		for _, n := range notices {
			fmt.Fprintln(w, n)
		}
	case len(notices) > 0:
		// Most routes require authentication, which a proxyless client cannot have checked:
		// a deployment without proxyless clients would get a line per route. The count says
		// there is something to read; -proxyless lists it.
		fmt.Fprintf(w, "%s: %d route(s) not served to proxyless gRPC clients (validate -proxyless -f %s lists them with the reason)\n", *file, len(notices), *file)
	}
	fmt.Fprintf(w, "%s: %d object(s), valid\n", *file, len(objs))
	if err := w.Flush(); err != nil {
		fmt.Fprintln(stderr, "validate:", err)
		return 2
	}
	return 0
}

// proxylessNotices name the routes of a valid file that proxyless gRPC clients will not get,
// sorted by id, with the reason serve shows in their status.xds.grpc (OMITTED): the
// revision the file makes, translated by the pipeline as its whole-revision checks
// translated it, and left out by envoy.GRPCOmissions, the pass the gRPC flavor's build runs.
// A notice is not a problem: such a route is served to Envoy, by design.
func proxylessNotices(ctx context.Context, api *manage.API, pipe *pipeline.Pipeline, file string, objs []manage.FileObject) ([]string, error) {
	snap, err := api.FileSnapshot(ctx, objs)
	if err != nil {
		return nil, err
	}
	cfg, err := pipe.Translate(snap)
	if err != nil {
		return nil, err
	}
	omitted := envoy.GRPCOmissions(cfg)
	if len(omitted) == 0 {
		return nil, nil
	}
	routes := make(map[string]manage.FileObject, len(omitted))
	for _, fo := range objs {
		if fo.Kind == model.KindRoutes {
			routes[fo.Obj.GetID()] = fo
		}
	}
	out := make([]string, 0, len(omitted))
	for _, id := range slices.Sorted(maps.Keys(omitted)) {
		why := omitted[id]
		at := file
		if fo, ok := routes[id]; ok {
			at = fmt.Sprintf("%s:%d", file, fo.FieldLine(reasonField(why)))
		}
		out = append(out, fmt.Sprintf("%s: %s/%s: not served to proxyless gRPC clients: %s", at, model.KindRoutes, id, why))
	}
	return out, nil
}

// reasonField is the field an omission's reason starts with ("conditions[0].method: ...",
// "targets[1].tls: ...", "require_auth, waf: ..."), "" when it starts with none (an object
// such as "ip-rules/ban"): the notice then names the route's own line.
func reasonField(why string) string {
	m := leadingField.FindString(why)
	if m == "" || (len(m) < len(why) && !strings.ContainsRune(": ,", rune(why[len(m)]))) {
		return ""
	}
	return m
}

var leadingField = regexp.MustCompile(`^[a-z_]+(?:\[\d+\])?(?:\.[a-z_]+(?:\[\d+\])?)*`)

// offlineAPI is a management API running the checks serve runs on a file, with nothing
// stored or served: the validators the serving components register (xDS routes, WAF rule
// sets, CEL policies) and the whole-revision checks of the consumers that can refuse a
// revision (xDS, ext_authz, the rate-limit service). Its configuration is the environment's, as serve's is.
func offlineAPI() (*manage.API, *pipeline.Pipeline, func(), error) {
	cfg, err := loadConfig()
	if err != nil {
		return nil, nil, nil, err
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	reg := prometheus.NewRegistry()
	xs, err := newXDSServer(cfg, log, reg)
	if err != nil {
		return nil, nil, nil, err
	}
	wafs := waf.NewRegistry(waf.RegistryOptions{Logger: log})
	eng, err := extauthz.New(extauthz.Options{Logger: log, Registerer: reg, WAF: wafs})
	if err != nil {
		xs.Close()
		return nil, nil, nil, err
	}
	pipe := pipeline.New(nil, log, xs, eng, newRateLimitConsumer(nil, log))
	pipe.SetTranslate(translateOptions(cfg))
	api := manage.New(manage.Options{Model: pipe, Logger: log})
	addConsumerChecks(api, pipe)
	return api, pipe, func() { xs.Close() }, nil
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
