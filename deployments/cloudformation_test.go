package deployments

import (
	"context"
	"fmt"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"

	"github.com/wsserver/wsserver/adapters/config"
)

// bedrockActions is everything the instances may do in Bedrock (PROTOCOL.md §10: Converse
// needs InvokeModel, ConverseStream InvokeModelWithResponseStream).
var bedrockActions = []string{
	"bedrock:ApplyGuardrail",
	"bedrock:InvokeModel",
	"bedrock:InvokeModelWithResponseStream",
}

// roleActions is every action the instance role holds: the Bedrock ones, reading the
// secrets path, and the optional log group. Widening it is a decision: make it here.
var roleActions = append([]string{
	"logs:CreateLogStream",
	"logs:DescribeLogStreams",
	"logs:PutLogEvents",
	"ssm:GetParametersByPath",
}, bedrockActions...)

// template is the parsed CloudFormation template, kept as yaml.Node so that the
// short-form tags (!Ref, !Sub, !GetAtt, !If, ...) stay visible instead of failing a
// decode into structs.
type template struct {
	root                          *yaml.Node
	params, resources, conditions map[string]bool
}

func parseTemplate(text string) (*template, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal([]byte(text), &doc); err != nil {
		return nil, err
	}
	if len(doc.Content) != 1 || doc.Content[0].Kind != yaml.MappingNode {
		return nil, fmt.Errorf("template is not a mapping")
	}
	tp := &template{root: doc.Content[0]}
	tp.params = keys(get(tp.root, "Parameters"))
	tp.resources = keys(get(tp.root, "Resources"))
	tp.conditions = keys(get(tp.root, "Conditions"))
	if len(tp.resources) == 0 {
		return nil, fmt.Errorf("template has no resources")
	}
	return tp, nil
}

// get follows a path of mapping keys; nil when any is missing.
func get(n *yaml.Node, path ...string) *yaml.Node {
	for _, key := range path {
		if n == nil || n.Kind != yaml.MappingNode {
			return nil
		}
		var next *yaml.Node
		for i := 0; i+1 < len(n.Content); i += 2 {
			if n.Content[i].Value == key {
				next = n.Content[i+1]
			}
		}
		n = next
	}
	return n
}

func keys(n *yaml.Node) map[string]bool {
	out := map[string]bool{}
	if n != nil && n.Kind == yaml.MappingNode {
		for i := 0; i < len(n.Content); i += 2 {
			out[n.Content[i].Value] = true
		}
	}
	return out
}

// items returns the children of a sequence; none for nil.
func items(n *yaml.Node) []*yaml.Node {
	if n == nil {
		return nil
	}
	return n.Content
}

// walk calls fn on n and every node below it.
func walk(n *yaml.Node, fn func(*yaml.Node)) {
	if n == nil {
		return
	}
	fn(n)
	for _, c := range n.Content {
		walk(c, fn)
	}
}

// resourcesOf returns the names and bodies of the resources of one type, in order.
func (tp *template) resourcesOf(typ string) (names []string, bodies []*yaml.Node) {
	res := get(tp.root, "Resources")
	for i := 0; i+1 < len(res.Content); i += 2 {
		if v := get(res.Content[i+1], "Type"); v != nil && v.Value == typ {
			names = append(names, res.Content[i].Value)
			bodies = append(bodies, res.Content[i+1])
		}
	}
	return names, bodies
}

// one returns the single resource of a type, or a problem.
func (tp *template) one(typ string) (string, *yaml.Node, error) {
	names, bodies := tp.resourcesOf(typ)
	if len(names) != 1 {
		return "", nil, fmt.Errorf("want exactly one %s, have %d", typ, len(names))
	}
	return names[0], bodies[0], nil
}

// attributes reads a Key/Value list (LoadBalancerAttributes, TargetGroupAttributes).
func attributes(n *yaml.Node) map[string]string {
	out := map[string]string{}
	if n == nil {
		return out
	}
	for _, kv := range n.Content {
		if k, v := get(kv, "Key"), get(kv, "Value"); k != nil && v != nil {
			out[k.Value] = v.Value
		}
	}
	return out
}

// target names what a !Ref or !GetAtt points at ("X" for !Ref X and !GetAtt X.GroupId),
// or "" for anything else.
func target(n *yaml.Node) string {
	switch {
	case n == nil:
		return ""
	case n.Tag == "!Ref":
		return n.Value
	case n.Tag == "!GetAtt" && n.Kind == yaml.ScalarNode:
		name, _, _ := strings.Cut(n.Value, ".")
		return name
	case n.Tag == "!GetAtt" && n.Kind == yaml.SequenceNode && len(n.Content) > 0:
		return n.Content[0].Value
	case n.Kind == yaml.MappingNode && len(n.Content) == 2:
		switch n.Content[0].Value {
		case "Ref":
			return n.Content[1].Value
		case "Fn::GetAtt":
			return target(&yaml.Node{Kind: n.Content[1].Kind, Tag: "!GetAtt", Value: n.Content[1].Value, Content: n.Content[1].Content})
		}
	}
	return ""
}

var pseudoParams = map[string]bool{
	"AWS::AccountId": true, "AWS::NoValue": true, "AWS::NotificationARNs": true, "AWS::Partition": true,
	"AWS::Region": true, "AWS::StackId": true, "AWS::StackName": true, "AWS::URLSuffix": true,
}

var subVar = regexp.MustCompile(`\$\{([^}]*)\}`)

// checkRefs: every Ref, GetAtt, Sub variable, If and Condition names something that
// exists.
func (tp *template) checkRefs() []string {
	var problems []string
	bad := func(n *yaml.Node, format string, args ...any) {
		problems = append(problems, fmt.Sprintf("line %d: ", n.Line)+fmt.Sprintf(format, args...))
	}
	ref := func(n *yaml.Node, name string) {
		if !tp.params[name] && !tp.resources[name] && !pseudoParams[name] {
			bad(n, "Ref %q names no parameter, resource or pseudo parameter", name)
		}
	}
	getAtt := func(n *yaml.Node, name string) {
		if !tp.resources[name] {
			bad(n, "GetAtt %q names no resource", name)
		}
	}
	sub := func(n *yaml.Node) {
		tmpl, locals := n, map[string]bool{}
		if n.Kind == yaml.SequenceNode {
			if len(n.Content) != 2 {
				bad(n, "Sub takes a string and a map")
				return
			}
			tmpl, locals = n.Content[0], keys(n.Content[1])
		}
		for _, m := range subVar.FindAllStringSubmatch(tmpl.Value, -1) {
			name := m[1]
			switch {
			case strings.HasPrefix(name, "!"): // a literal ${...}
			case locals[name]:
			case strings.Contains(name, ".") && !strings.HasPrefix(name, "AWS::"):
				getAtt(n, name[:strings.IndexByte(name, '.')])
			default:
				ref(n, name)
			}
		}
	}
	cond := func(n *yaml.Node, name string) {
		if !tp.conditions[name] {
			bad(n, "condition %q is not defined", name)
		}
	}
	walk(tp.root, func(n *yaml.Node) {
		switch n.Tag {
		case "!Ref":
			ref(n, n.Value)
		case "!GetAtt":
			getAtt(n, target(n))
		case "!Sub":
			sub(n)
		case "!If":
			if len(n.Content) != 3 {
				bad(n, "If takes a condition and two values")
			} else {
				cond(n, n.Content[0].Value)
			}
		case "!Condition":
			cond(n, n.Value)
		}
		if n.Kind != yaml.MappingNode {
			return
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i].Value, n.Content[i+1]
			switch k {
			case "Ref":
				ref(v, v.Value)
			case "Fn::GetAtt":
				getAtt(v, target(&yaml.Node{Kind: v.Kind, Tag: "!GetAtt", Value: v.Value, Content: v.Content}))
			case "Fn::Sub":
				sub(v)
			case "Fn::If":
				if len(v.Content) == 3 {
					cond(v, v.Content[0].Value)
				}
			case "Condition":
				if v.Kind == yaml.ScalarNode && v.Tag != "!Ref" {
					cond(v, v.Value)
				}
			}
		}
	})
	return problems
}

// checkLoadBalancing: the health check, the idle timeout against the ping interval,
// the deregistration delay against the shutdown, no stickiness.
func (tp *template) checkLoadBalancing(cfg config.Config, stopTimeout time.Duration) []string {
	var problems []string
	bad := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }

	_, tg, err := tp.one("AWS::ElasticLoadBalancingV2::TargetGroup")
	if err != nil {
		return []string{err.Error()}
	}
	for _, kv := range [][2]string{
		{"Protocol", "HTTP"}, {"HealthCheckProtocol", "HTTP"}, {"HealthCheckPath", "/health/"},
	} {
		if v := get(tg, "Properties", kv[0]); v == nil || v.Value != kv[1] {
			bad("target group %s is not %s", kv[0], kv[1])
		}
	}
	if v := get(tg, "Properties", "Matcher", "HttpCode"); v == nil || v.Value != "200" {
		bad("target group health check matcher is not 200 (a draining instance answers 503)")
	}
	attrs := attributes(get(tg, "Properties", "TargetGroupAttributes"))
	delay, err := strconv.Atoi(attrs["deregistration_delay.timeout_seconds"])
	switch {
	case err != nil:
		bad("deregistration_delay.timeout_seconds unset or not a number (AWS default 300s is not a choice)")
	case time.Duration(delay)*time.Second < cfg.HTTP.ShutdownGrace:
		bad("deregistration delay %ds is below SHUTDOWN_GRACE (%s)", delay, cfg.HTTP.ShutdownGrace)
	case time.Duration(delay)*time.Second < stopTimeout:
		bad("deregistration delay %ds is below the unit's TimeoutStopSec (%s): the ALB may cut sockets the server is still closing", delay, stopTimeout)
	}
	if attrs["stickiness.enabled"] != "false" {
		bad("stickiness.enabled=%q, want \"false\" stated", attrs["stickiness.enabled"])
	}

	_, lb, err := tp.one("AWS::ElasticLoadBalancingV2::LoadBalancer")
	if err != nil {
		return append(problems, err.Error())
	}
	lbAttrs := attributes(get(lb, "Properties", "LoadBalancerAttributes"))
	idle, err := strconv.Atoi(lbAttrs["idle_timeout.timeout_seconds"])
	switch {
	case err != nil:
		bad("idle_timeout.timeout_seconds unset or not a number")
	case time.Duration(idle)*time.Second <= 2*cfg.WebSocket.PingInterval:
		// The server itself drops a peer silent for two intervals; the ALB must not
		// cut a socket before that.
		bad("ALB idle timeout %ds is not above two ping intervals (2 x %s)", idle, cfg.WebSocket.PingInterval)
	}
	return problems
}

// checkIAM: the instance role holds exactly roleActions, the Bedrock policy exactly
// the three Bedrock actions, and no Bedrock statement is on "*".
func (tp *template) checkIAM() []string {
	var problems []string
	bad := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	_, role, err := tp.one("AWS::IAM::Role")
	if err != nil {
		return []string{err.Error()}
	}
	if names, _ := tp.resourcesOf("AWS::IAM::Policy"); len(names) > 0 {
		bad("stand-alone IAM policies %v: keep the role's permissions in the role", names)
	}
	if get(role, "Properties", "ManagedPolicyArns") != nil {
		bad("the role has managed policies: their actions are not reviewed here")
	}
	actions := func(n *yaml.Node) []string {
		var out []string
		walk(n, func(n *yaml.Node) {
			if n.Kind != yaml.MappingNode {
				return
			}
			if get(n, "NotAction") != nil {
				bad("NotAction grants everything else")
			}
			a := get(n, "Action")
			if a == nil {
				return
			}
			if a.Kind == yaml.ScalarNode {
				out = append(out, a.Value)
			}
			for _, c := range a.Content {
				out = append(out, c.Value)
			}
			if strings.HasPrefix(a.Value, "bedrock:") || len(a.Content) > 0 && strings.HasPrefix(a.Content[0].Value, "bedrock:") {
				if r := get(n, "Resource"); r == nil || r.Value == "*" || r.Tag != "!Ref" {
					bad("a Bedrock statement's Resource is not a parameter of named ARNs")
				}
			}
		})
		slices.Sort(out)
		return slices.Compact(out)
	}
	policies := get(role, "Properties", "Policies")
	if got := actions(policies); !slices.Equal(got, sorted(roleActions)) {
		bad("the role's actions are %v, want %v", got, sorted(roleActions))
	}
	var bedrock *yaml.Node
	walk(policies, func(n *yaml.Node) {
		if v := get(n, "PolicyName"); v != nil && v.Value == "bedrock" {
			bedrock = n
		}
	})
	if bedrock == nil {
		bad("no policy named bedrock")
	} else if got := actions(bedrock); !slices.Equal(got, sorted(bedrockActions)) {
		bad("the bedrock policy's actions are %v, want %v", got, sorted(bedrockActions))
	}
	return problems
}

func sorted(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}

// checkSecurityGroups: every ingress rule comes from a security group, except the
// ALB's own listener ports; the instances reach Redis and PostgreSQL through rules
// on their groups.
func (tp *template) checkSecurityGroups() []string {
	var problems []string
	bad := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }

	_, lb, err := tp.one("AWS::ElasticLoadBalancingV2::LoadBalancer")
	if err != nil {
		return []string{err.Error()}
	}
	albGroups := map[string]bool{}
	for _, g := range items(get(lb, "Properties", "SecurityGroups")) {
		albGroups[target(g)] = true
	}
	listenerPorts := map[string]bool{}
	_, listeners := tp.resourcesOf("AWS::ElasticLoadBalancingV2::Listener")
	for _, l := range listeners {
		if p := get(l, "Properties", "Port"); p != nil {
			listenerPorts[p.Value] = true
		}
	}
	_, lt, err := tp.one("AWS::EC2::LaunchTemplate")
	if err != nil {
		return []string{err.Error()}
	}
	instanceGroups := map[string]bool{}
	for _, g := range items(get(lt, "Properties", "LaunchTemplateData", "SecurityGroupIds")) {
		instanceGroups[target(g)] = true
	}

	type rule struct {
		group, source, from, to string
		cidr                    bool
	}
	var rules []rule
	add := func(group string, r *yaml.Node) {
		x := rule{group: group, source: target(get(r, "SourceSecurityGroupId"))}
		if v := get(r, "FromPort"); v != nil {
			x.from = v.Value
		}
		if v := get(r, "ToPort"); v != nil {
			x.to = v.Value
		}
		for _, k := range []string{"CidrIp", "CidrIpv6", "SourcePrefixListId"} {
			x.cidr = x.cidr || get(r, k) != nil
		}
		rules = append(rules, x)
	}
	names, groups := tp.resourcesOf("AWS::EC2::SecurityGroup")
	for i, g := range groups {
		if in := get(g, "Properties", "SecurityGroupIngress"); in != nil {
			for _, r := range in.Content {
				add(names[i], r)
			}
		}
	}
	_, standalone := tp.resourcesOf("AWS::EC2::SecurityGroupIngress")
	for _, r := range standalone {
		add(target(get(r, "Properties", "GroupId")), get(r, "Properties"))
	}

	for _, r := range rules {
		switch {
		case r.cidr && !albGroups[r.group]:
			bad("%s: ingress from an address range; only the ALB's listeners may be", r.group)
		case r.cidr && (r.from != r.to || !listenerPorts[r.from]):
			bad("%s: ingress from an address range on ports %s-%s, which are not a listener's", r.group, r.from, r.to)
		case !r.cidr && r.source == "":
			bad("%s: ingress rule from neither a security group nor an address range", r.group)
		case instanceGroups[r.group] && !albGroups[r.source]:
			bad("%s: the instances accept traffic from %s, not only from the ALB", r.group, r.source)
		}
	}
	for _, want := range []struct{ param, port string }{
		{"RedisSecurityGroupId", "6379"}, {"PostgresSecurityGroupId", "5432"},
	} {
		if !tp.params[want.param] {
			bad("no parameter %s", want.param)
		}
		ok := slices.ContainsFunc(rules, func(r rule) bool {
			return r.group == want.param && instanceGroups[r.source] && r.from == want.port && r.to == want.port
		})
		if !ok {
			bad("no rule lets the instances reach %s on %s", want.param, want.port)
		}
	}
	return problems
}

// checkScaling: the group sits behind the target group, replaces instances the ALB
// finds unhealthy, and holds terminating instances long enough for a graceful stop.
func (tp *template) checkScaling(stopTimeout time.Duration) []string {
	var problems []string
	bad := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	_, asg, err := tp.one("AWS::AutoScaling::AutoScalingGroup")
	if err != nil {
		return []string{err.Error()}
	}
	tgName, _, err := tp.one("AWS::ElasticLoadBalancingV2::TargetGroup")
	if err != nil {
		return []string{err.Error()}
	}
	tgs := get(asg, "Properties", "TargetGroupARNs")
	if tgs == nil || len(tgs.Content) != 1 || target(tgs.Content[0]) != tgName {
		bad("the group is not attached to the target group %s", tgName)
	}
	if v := get(asg, "Properties", "HealthCheckType"); v == nil || v.Value != "ELB" {
		bad("HealthCheckType is not ELB: instances failing /health/ are not replaced")
	}
	var hook *yaml.Node
	if hooks := get(asg, "Properties", "LifecycleHookSpecificationList"); hooks != nil {
		for _, h := range hooks.Content {
			if v := get(h, "LifecycleTransition"); v != nil && v.Value == "autoscaling:EC2_INSTANCE_TERMINATING" {
				hook = h
			}
		}
	}
	if hook == nil {
		return append(problems, "no termination lifecycle hook")
	}
	hb, err := strconv.Atoi(valueOf(get(hook, "HeartbeatTimeout")))
	if err != nil || time.Duration(hb)*time.Second < stopTimeout {
		bad("termination hook HeartbeatTimeout %q is below the unit's TimeoutStopSec (%s)", valueOf(get(hook, "HeartbeatTimeout")), stopTimeout)
	}
	if v := valueOf(get(hook, "DefaultResult")); v != "CONTINUE" {
		bad("termination hook DefaultResult %q: ABANDON also terminates, but reads as a failure", v)
	}
	return problems
}

func valueOf(n *yaml.Node) string {
	if n == nil {
		return ""
	}
	return n.Value
}

// userData returns the launch template's user data script as written (before Sub).
func (tp *template) userData() (string, error) {
	_, lt, err := tp.one("AWS::EC2::LaunchTemplate")
	if err != nil {
		return "", err
	}
	sub := get(lt, "Properties", "LaunchTemplateData", "UserData", "Fn::Base64")
	switch {
	case sub == nil || sub.Tag != "!Sub":
		return "", fmt.Errorf("UserData is not Fn::Base64 of a !Sub")
	case sub.Kind == yaml.SequenceNode && len(sub.Content) > 0:
		return sub.Content[0].Value, nil
	default:
		return sub.Value, nil
	}
}

// checkUserDataUnit: the unit the instances install is deployments/systemd's,
// byte for byte.
func (tp *template) checkUserDataUnit(unitText string) []string {
	script, err := tp.userData()
	if err != nil {
		return []string{err.Error()}
	}
	_, rest, ok := strings.Cut(script, "cat > /etc/systemd/system/wsserver.service <<'UNIT'\n")
	if !ok {
		return []string{"user data does not write /etc/systemd/system/wsserver.service from a quoted here-document"}
	}
	embedded, _, ok := strings.Cut(rest, "\nUNIT\n")
	if !ok {
		return []string{"user data: the UNIT here-document does not end"}
	}
	if embedded+"\n" != unitText {
		return []string{"the unit in the user data differs from " + unitPath + ": copy it over"}
	}
	return nil
}

func loadTemplate(t *testing.T) (*template, string) {
	t.Helper()
	text := read(t, templatePath)
	tp, err := parseTemplate(text)
	require.NoError(t, err)
	return tp, text
}

func stopTimeout(t *testing.T) time.Duration {
	t.Helper()
	u, err := parseUnit(read(t, unitPath))
	require.NoError(t, err)
	v, ok := u.last("Service", "TimeoutStopSec")
	require.True(t, ok)
	d, err := parseSpan(v)
	require.NoError(t, err)
	return d
}

// templateChecks runs every template check.
func templateChecks(tp *template, cfg config.Config, stop time.Duration, unitText string) map[string][]string {
	return map[string][]string{
		"refs":            tp.checkRefs(),
		"load balancing":  tp.checkLoadBalancing(cfg, stop),
		"iam":             tp.checkIAM(),
		"security groups": tp.checkSecurityGroups(),
		"scaling":         tp.checkScaling(stop),
		"user data unit":  tp.checkUserDataUnit(unitText),
	}
}

func TestTemplate(t *testing.T) {
	cfg := defaults(t)
	tp, _ := loadTemplate(t)
	for name, problems := range templateChecks(tp, cfg, stopTimeout(t), read(t, unitPath)) {
		assert.Empty(t, problems, name)
	}
}

func TestTemplateChecksCatch(t *testing.T) {
	cfg := defaults(t)
	_, text := loadTemplate(t)
	stop, unitText := stopTimeout(t), read(t, unitPath)
	for _, c := range []struct {
		mutation
		check string
	}{
		{mutation{"Ref to nothing", "VpcId: !Ref VpcId", "VpcId: !Ref VpcIdd"}, "refs"},
		{mutation{"long-form Ref to nothing", "Subnets: !Ref PublicSubnetIds", "Subnets: {Ref: PublicSubnets}"}, "refs"},
		{mutation{"GetAtt of nothing", "Arn: !GetAtt InstanceProfile.Arn", "Arn: !GetAtt Profile.Arn"}, "refs"},
		{mutation{"Sub of nothing", "'${BinaryUrl}'", "'${BinaryURL}'"}, "refs"},
		{mutation{"Sub of a shell variable", `"${!name##*/}"`, `"${name##*/}"`}, "refs"},
		{mutation{"undefined condition", "Condition: HasCertificate", "Condition: HasCert"}, "refs"},
		{mutation{"health path", "HealthCheckPath: /health/", "HealthCheckPath: /health"}, "load balancing"},
		{mutation{"matcher", `HttpCode: "200"`, `HttpCode: "200-399"`}, "load balancing"},
		{mutation{"short deregistration", "deregistration_delay.timeout_seconds\n          Value: \"60\"", "deregistration_delay.timeout_seconds\n          Value: \"20\""}, "load balancing"},
		{mutation{"deregistration under the stop timeout", "deregistration_delay.timeout_seconds\n          Value: \"60\"", "deregistration_delay.timeout_seconds\n          Value: \"30\""}, "load balancing"},
		{mutation{"sticky", "stickiness.enabled\n          Value: \"false\"", "stickiness.enabled\n          Value: \"true\""}, "load balancing"},
		{mutation{"short idle timeout", "idle_timeout.timeout_seconds\n          Value: \"60\"", "idle_timeout.timeout_seconds\n          Value: \"50\""}, "load balancing"},
		{mutation{"bedrock wildcard", "- bedrock:InvokeModelWithResponseStream", "- bedrock:*"}, "iam"},
		{mutation{"extra action", "- bedrock:InvokeModelWithResponseStream", "- bedrock:InvokeModelWithResponseStream\n                  - s3:GetObject"}, "iam"},
		{mutation{"bedrock on *", "Resource: !Ref BedrockModelArns", "Resource: \"*\""}, "iam"},
		{mutation{"open instance port", "      SourceSecurityGroupId: !GetAtt AlbSecurityGroup.GroupId", "      CidrIp: 0.0.0.0/0"}, "security groups"},
		{mutation{"open ALB on another port", "FromPort: 443\n          ToPort: 443", "FromPort: 22\n          ToPort: 22"}, "security groups"},
		{mutation{"Redis from anywhere", "GroupId: !Ref RedisSecurityGroupId\n      IpProtocol: tcp\n      FromPort: 6379\n      ToPort: 6379\n      SourceSecurityGroupId: !GetAtt InstanceSecurityGroup.GroupId", "GroupId: !Ref RedisSecurityGroupId\n      IpProtocol: tcp\n      FromPort: 6379\n      ToPort: 6379\n      CidrIp: 10.0.0.0/8"}, "security groups"},
		{mutation{"no PostgreSQL rule", "FromPort: 5432\n      ToPort: 5432\n      SourceSecurityGroupId", "FromPort: 5433\n      ToPort: 5433\n      SourceSecurityGroupId"}, "security groups"},
		{mutation{"no hook", "LifecycleTransition: autoscaling:EC2_INSTANCE_TERMINATING", "LifecycleTransition: autoscaling:EC2_INSTANCE_LAUNCHING"}, "scaling"},
		{mutation{"short hook", "HeartbeatTimeout: 60", "HeartbeatTimeout: 30"}, "scaling"},
		{mutation{"EC2 health checks", "HealthCheckType: ELB", "HealthCheckType: EC2"}, "scaling"},
		{mutation{"unit drift", "              TimeoutStopSec=40s\n", "              TimeoutStopSec=30s\n"}, "user data unit"},
	} {
		t.Run(c.name, func(t *testing.T) {
			tp, err := parseTemplate(c.apply(t, text))
			require.NoError(t, err)
			assert.NotEmpty(t, templateChecks(tp, cfg, stop, unitText)[c.check])
		})
	}
}

// The user data is a shell script once CloudFormation has filled it in: bash -n
// parses it with every ${Name} replaced and every ${!name} unescaped.
func TestUserDataParses(t *testing.T) {
	t.Parallel() // an external tool; no environment changes
	externalTool(t, "bash", "the template's user data (bash -n)", "Debian package bash", true)
	tp, _ := loadTemplate(t)
	script, err := tp.userData()
	require.NoError(t, err)
	out, err := bashParse(t, script)
	require.NoError(t, err, "bash -n: %s", out)

	t.Run("catches a broken loop", func(t *testing.T) {
		out, err := bashParse(t, mutation{"no done", "  done >> /etc/wsserver/wsserver.env", "  >> /etc/wsserver/wsserver.env"}.apply(t, script))
		assert.Error(t, err, "bash -n accepted a loop without done:\n%s", out)
	})
}

// bashParse runs bash -n on a Sub template as CloudFormation would fill it in.
func bashParse(t *testing.T, script string) (string, error) {
	t.Helper()
	filled := subVar.ReplaceAllStringFunc(script, func(v string) string {
		if strings.HasPrefix(v, "${!") {
			return "${" + v[3:]
		}
		return "x"
	})
	cmd := exec.CommandContext(t.Context(), "bash", "-n")
	cmd.Stdin = strings.NewReader(filled)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// cfn-lint knows every resource type's schema; it exits non-zero on errors and
// warnings alike.
func TestTemplateLint(t *testing.T) {
	t.Parallel() // an external tool; no environment changes
	// cfn-lint is Python, packaged neither by Debian 12 nor as a Go module (the Go
	// CloudFormation schema library, awslabs/goformation, is archived), so CI
	// skips it with a WARNING from .ci/run; the rules of this package still run.
	externalTool(t, "cfn-lint", "the CloudFormation template against AWS's resource schemas (cfn-lint)",
		"pipx install cfn-lint; not packaged by Debian 12", false)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "cfn-lint", templatePath).CombinedOutput()
	assert.NoError(t, err, "cfn-lint:\n%s", out)
}
