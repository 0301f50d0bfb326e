package config

import (
	"io"
	"strings"

	"github.com/spf13/pflag"
)

// ErrHelp is returned by Load for -h or --help; main prints Usage and exits 0.
var ErrHelp = pflag.ErrHelp

// rawValue keeps a flag's text as given, so that every source is parsed
// and checked by the same code in Load.
type rawValue struct {
	s   string
	typ string
}

func (r *rawValue) String() string     { return r.s }
func (r *rawValue) Set(s string) error { r.s = s; return nil }
func (r *rawValue) Type() string       { return r.typ }

// viperFlag binds a flag to viper as plain text: viper would cast "bool"
// and "int" flags itself and turn "maybe" into false without a word.
type viperFlag struct{ f *pflag.Flag }

func (v viperFlag) HasChanged() bool    { return v.f.Changed }
func (v viperFlag) Name() string        { return v.f.Name }
func (v viperFlag) ValueString() string { return v.f.Value.String() }
func (v viperFlag) ValueType() string   { return "string" }

// cmdFlags are proxsmtpd's command-line flags.
type cmdFlags struct {
	config  *pflag.Flag
	debug   *pflag.Flag
	pidFile *pflag.Flag
	version *rawValue
}

func newFlagSet(role Role) (*pflag.FlagSet, cmdFlags) {
	fs := pflag.NewFlagSet(role.String(), pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	fs.SortFlags = false

	var c cmdFlags
	def := "none"
	if role == Edge {
		def = DefaultEdgeConfig
	}
	fs.StringP("config", "f", "", "configuration file (default "+def+"; also $SLUICE_CONFIG)")
	fs.StringP("debug", "d", "", "log level 0..4 (0 errors ... 4 debug); default 3")
	fs.StringP("pid-file", "p", "", "write the process id to this file")
	version := &rawValue{typ: "bool"}
	fs.VarP(version, "version", "v", "print the version and the configuration file, then exit")
	fs.Lookup("version").NoOptDefVal = "true"
	c.version = version
	c.config = fs.Lookup("config")
	c.debug = fs.Lookup("debug")
	c.pidFile = fs.Lookup("pid-file")

	for _, s := range settings {
		if s.proxsmtpd {
			continue
		}
		typ := map[kind]string{kindString: "string", kindBool: "bool", kindInt: "int",
			kindDuration: "duration", kindSize: "size", kindList: "urls"}[s.kind]
		help := s.help
		if s.def != "" {
			help += " (default " + s.def + ")"
		}
		fs.Var(&rawValue{typ: typ}, FlagName(s.key), help)
		if s.kind == kindBool {
			fs.Lookup(FlagName(s.key)).NoOptDefVal = "true"
		}
	}
	return fs, c
}

// Usage is the usage text of a role's command, with every flag.
func Usage(role Role) string {
	fs, _ := newFlagSet(role)
	name := role.String()
	var b strings.Builder
	b.WriteString("usage: " + name + " [-d debuglevel] [-f configfile] [-p pidfile] [--setting=value ...]\n")
	b.WriteString("       " + name + " -v\n\n")
	b.WriteString(fs.FlagUsages())
	b.WriteString("\nEvery setting can also be given in the configuration file or as SLUICE_<KEY>\n")
	b.WriteString("in the environment; precedence: flags > environment > file > defaults.\n")
	b.WriteString("See docs/configuration.md.\n")
	return b.String()
}
