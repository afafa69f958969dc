package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/api-gateway/api-gateway/xds/manage"
)

// runValidate checks a declarative file offline: strict decoding, every object's validation
// and references between the file's objects. It prints one line per problem with the file,
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
	objs, probs := manage.ParseFile(*file, data)
	if len(probs) == 0 {
		probs = manage.New(manage.Options{Store: nil}).CheckFile(*file, objs)
	}
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

// applyConfigFile applies the declarative file through the API's validation; a bad file stops
// the start (or is ignored on SIGHUP) and changes nothing.
func applyConfigFile(ctx context.Context, a *app, path string) error {
	rev, err := a.api.ApplyFile(ctx, path)
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
