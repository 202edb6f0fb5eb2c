// The reference .dockerignore matcher (moby/patternmatcher, the version
// BuildKit v0.32.2 pins) and Go's filepath.Match, answering the
// differential tests one JSON request per line on stdin. Strings travel
// hex-encoded so that bytes that are not UTF-8 arrive intact.
package main

import (
	"bufio"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp/syntax"
	"strings"

	"github.com/moby/patternmatcher"
)

type request struct {
	Patterns []string `json:"patterns"`
	Paths    []string `json:"paths"`
	// Glob, when set, asks for filepath.Match(Glob, name) for each path.
	Glob *string `json:"glob"`
	// Unicode, when set, asks for the members of the class \p{Unicode}.
	Unicode *string `json:"unicode"`
}

type response struct {
	NewErr  string   `json:"new_err"`
	Whole   []string `json:"whole"`
	Walked  []string `json:"walked"`
	NoCtx   []string `json:"no_context"`
	Globbed []string `json:"glob"`
	// Ranges of the class asked for, lo and hi alternating.
	Ranges []rune `json:"ranges"`
}

// classRanges is what Go's regexp makes of [\p{name}].
func classRanges(name string) []rune {
	re, err := syntax.Parse(`[\p{`+name+`}]`, syntax.Perl)
	if err != nil {
		return nil
	}
	switch re.Op {
	case syntax.OpLiteral:
		return []rune{re.Rune[0], re.Rune[0]}
	case syntax.OpAnyChar:
		return []rune{0, 0x10FFFF}
	}
	return re.Rune
}

func unhex(s string) string {
	b, err := hex.DecodeString(s)
	if err != nil {
		panic(err)
	}
	return string(b)
}

func answer(ok bool, err error) string {
	if err != nil {
		return "err"
	}
	if ok {
		return "true"
	}
	return "false"
}

// walked matches the path's parents one by one, handing their results
// down, as the fsutil walker does.
func walked(pm *patternmatcher.PatternMatcher, path string) (bool, error) {
	info := patternmatcher.MatchInfo{}
	if parent := filepath.Dir(path); parent != "." {
		dirs := strings.Split(parent, "/")
		for i := range dirs {
			var err error
			_, info, err = pm.MatchesUsingParentResults(strings.Join(dirs[:i+1], "/"), info)
			if err != nil {
				return false, err
			}
		}
	}
	ok, _, err := pm.MatchesUsingParentResults(path, info)
	return ok, err
}

func main() {
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 1<<20), 64<<20)
	out := json.NewEncoder(os.Stdout)
	for in.Scan() {
		var req request
		if err := json.Unmarshal(in.Bytes(), &req); err != nil {
			panic(err)
		}
		var resp response
		if req.Unicode != nil {
			resp.Ranges = classRanges(*req.Unicode)
		} else if req.Glob != nil {
			pattern := unhex(*req.Glob)
			for _, p := range req.Paths {
				resp.Globbed = append(resp.Globbed, answer(filepath.Match(pattern, unhex(p))))
			}
		} else {
			patterns := make([]string, len(req.Patterns))
			for i, p := range req.Patterns {
				patterns[i] = unhex(p)
			}
			pm, err := patternmatcher.New(patterns)
			if err != nil {
				resp.NewErr = err.Error()
			} else {
				for _, p := range req.Paths {
					path := unhex(p)
					resp.Whole = append(resp.Whole, answer(pm.MatchesOrParentMatches(path)))
					resp.Walked = append(resp.Walked, answer(walked(pm, path)))
					ok, _, err := pm.MatchesUsingParentResults(path, patternmatcher.MatchInfo{})
					resp.NoCtx = append(resp.NoCtx, answer(ok, err))
				}
			}
		}
		if err := out.Encode(resp); err != nil {
			panic(err)
		}
	}
}
