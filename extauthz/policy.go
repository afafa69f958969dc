package extauthz

import (
	"fmt"
	"strings"
	"sync"

	"github.com/google/cel-go/cel"
	"github.com/google/cel-go/checker"
	"github.com/google/cel-go/ext"
	"github.com/google/cel-go/interpreter"

	"github.com/api-gateway/api-gateway/ir"
	"github.com/api-gateway/api-gateway/model"
)

// Security policies are CEL expressions over three variables:
//
//	request:  method, path, query (map), headers (map, lowercase names), host, ip, country
//	identity: user_id, tenant, roles, scopes, api_key_id, method, claims (map)
//	route:    id, tenant, metadata (map)
//
// Each rule must evaluate to a bool. Rules are compiled once per snapshot and evaluated in
// order; the first rule that is true decides (allow or deny). A rule whose evaluation fails
// (a missing map key, say) counts as true for deny rules and false for allow rules, so an
// error never lets a request through.

var (
	celEnvOnce sync.Once
	celEnv     *cel.Env
	celEnvErr  error
)

func policyEnv() (*cel.Env, error) {
	celEnvOnce.Do(func() {
		celEnv, celEnvErr = cel.NewEnv(
			cel.Variable("request", cel.MapType(cel.StringType, cel.DynType)),
			cel.Variable("identity", cel.MapType(cel.StringType, cel.DynType)),
			cel.Variable("route", cel.MapType(cel.StringType, cel.DynType)),
			ext.Strings(),
			ext.Sets(),
			ext.Network(),
		)
	})
	return celEnv, celEnvErr
}

// Rules are written by administrators, but their inputs (headers, query, claims) come from
// callers, so a rule like nested comprehensions over request.headers can cost millions of
// steps per request. A rule whose worst case (every input at maxInputSize) stays within
// maxRuleCost runs as is; any other rule runs with a runtime cost limit of maxRuleCost (a
// rule that exceeds it fails, and a failed deny rule denies). maxExpressionLen bounds what
// may be stored.
const (
	maxExpressionLen = 4096
	maxRuleCost      = 100_000
	// maxInputSize bounds any list, map or string a rule reads: they come from request
	// headers (Envoy caps them at 60 KiB by default) or from trusted token claims.
	maxInputSize = 64 << 10
)

// inputSizes is the static cost estimator's view of the variables.
type inputSizes struct{}

func (inputSizes) EstimateSize(checker.AstNode) *checker.SizeEstimate {
	return &checker.SizeEstimate{Min: 0, Max: maxInputSize}
}

func (inputSizes) EstimateCallCost(string, string, *checker.AstNode, []checker.AstNode) *checker.CallEstimate {
	return nil
}

type compiledRule struct {
	name    string
	prg     cel.Program
	deny    bool
	status  int
	message string
}

type compiledPolicy struct {
	id    string
	rules []compiledRule
	// src is what it was compiled from (the memo's key: a policy whose rules are the same
	// is not compiled again).
	src []ir.PolicyRule
}

// compileRule compiles one expression; the error is fit for a field error.
func compileRule(expr string) (cel.Program, error) {
	if len(expr) > maxExpressionLen {
		return nil, fmt.Errorf("is longer than %d characters", maxExpressionLen)
	}
	env, err := policyEnv()
	if err != nil {
		return nil, err
	}
	ast, iss := env.Compile(expr)
	if iss != nil && iss.Err() != nil {
		return nil, fmt.Errorf("%s", strings.ReplaceAll(iss.Err().Error(), "\n", " "))
	}
	if ast.OutputType() != cel.BoolType && ast.OutputType() != cel.DynType {
		return nil, fmt.Errorf("must evaluate to a bool, not %s", ast.OutputType())
	}
	if est, err := env.EstimateCost(ast, inputSizes{}); err == nil && est.Max <= maxRuleCost {
		return env.Program(ast, cel.EvalOptions(cel.OptOptimize)) // bounded: no tracking needed
	}
	return env.Program(ast, cel.EvalOptions(cel.OptOptimize), cel.CostLimit(maxRuleCost))
}

func compilePolicy(p *ir.Policy) (*compiledPolicy, model.FieldErrors) {
	cp := &compiledPolicy{id: p.ID, src: p.Rules}
	var errs model.FieldErrors
	for i, r := range p.Rules {
		name := r.Name
		if name == "" {
			name = fmt.Sprintf("rules[%d]", i)
		}
		prg, err := compileRule(r.Expression)
		if err != nil {
			errs.Add(fmt.Sprintf("rules[%d].expression", i), "%v", err)
			// Fail closed, in place: a rule that does not compile denies (500) where it
			// stands, so an allow rule after it cannot let a request past it.
			cp.rules = append(cp.rules, compiledRule{name: name, deny: true, status: 500, message: "security policy is invalid"})
			continue
		}
		cr := compiledRule{name: name, prg: prg, deny: r.Deny, status: r.Status, message: r.Message}
		if cr.status == 0 {
			cr.status = 403
		}
		cp.rules = append(cp.rules, cr)
	}
	return cp, errs
}

// ValidatePolicy compiles a policy's CEL rules (part of Engine.CheckObject).
func ValidatePolicy(obj model.Object, _ *model.Snapshot) model.FieldErrors {
	p, ok := obj.(*model.Policy)
	if !ok {
		return nil
	}
	ip := &ir.Policy{ID: p.ID}
	for _, r := range p.Rules {
		ip.Rules = append(ip.Rules, ir.PolicyRule{Expression: r.Expression})
	}
	_, errs := compilePolicy(ip)
	return errs
}

// celActivation resolves the three variables; request and identity are lazy CEL maps
// (celvars.go), built once per request when a rule first reads them.
type celActivation struct {
	r        *Request
	d        *Decision
	request  any
	identity any
	route    any
}

func (a *celActivation) ResolveName(name string) (any, bool) {
	switch name {
	case "request":
		if a.request == nil {
			a.request = requestVal(a.r, a.d)
		}
		return a.request, true
	case "identity":
		if a.identity == nil {
			a.identity = identityVal(&a.d.Identity)
		}
		return a.identity, true
	case "route":
		return a.route, true
	}
	return nil, false
}

func (a *celActivation) Parent() interpreter.Activation { return nil }

func routeVars(id, tenant string, md map[string]string) map[string]any {
	if md == nil {
		md = map[string]string{}
	}
	return map[string]any{"id": id, "tenant": tenant, "metadata": md}
}

// evalPolicies runs the route's policies; matched is false when no rule matched.
func evalPolicies(pols []*compiledPolicy, act *celActivation) (rule *compiledRule, policyID string, evalErr error) {
	for _, p := range pols {
		for i := range p.rules {
			r := &p.rules[i]
			if r.prg == nil { // a rule that did not compile: deny
				return r, p.id, fmt.Errorf("policy %s %s does not compile", p.id, r.name)
			}
			out, _, err := r.prg.Eval(act)
			if err != nil {
				if r.deny {
					return r, p.id, err
				}
				continue
			}
			b, ok := out.Value().(bool)
			if !ok {
				// A dyn-typed rule that yields a non-bool is an error: it denies like one.
				if r.deny {
					return r, p.id, fmt.Errorf("policy %s %s: result is %s, not a bool", p.id, r.name, out.Type().TypeName())
				}
				continue
			}
			if b {
				return r, p.id, nil
			}
		}
	}
	return nil, "", nil
}
