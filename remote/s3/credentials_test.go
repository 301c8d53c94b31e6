package s3_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/keepfs/keepfs/remote/s3"
)

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestS3Credentials(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "creds")
	const content = `# comment
[default]
aws_access_key_id = DEFID
aws_secret_access_key = defsecret

[profile team]
aws_access_key_id=TEAMID
aws_secret_access_key=teamsecret
aws_session_token=tok

[broken]
aws_access_key_id = ONLYID
`
	if err := os.WriteFile(file, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		o       s3.CredentialOptions
		id      string
		secret  string
		wantErr string
	}{
		{"env", s3.CredentialOptions{Getenv: env(map[string]string{"AWS_ACCESS_KEY_ID": "ENVID", "AWS_SECRET_ACCESS_KEY": "envsecret"})}, "ENVID", "envsecret", ""},
		{"file wins over env", s3.CredentialOptions{File: file, Getenv: env(map[string]string{"AWS_ACCESS_KEY_ID": "ENVID", "AWS_SECRET_ACCESS_KEY": "envsecret"})}, "DEFID", "defsecret", ""},
		{"profile", s3.CredentialOptions{File: file, Profile: "team", Getenv: env(nil)}, "TEAMID", "teamsecret", ""},
		{"AWS_PROFILE", s3.CredentialOptions{File: file, Getenv: env(map[string]string{"AWS_PROFILE": "team"})}, "TEAMID", "teamsecret", ""},
		{"shared file", s3.CredentialOptions{Getenv: env(map[string]string{"AWS_SHARED_CREDENTIALS_FILE": file})}, "DEFID", "defsecret", ""},
		{"missing profile", s3.CredentialOptions{File: file, Profile: "nope", Getenv: env(nil)}, "", "", "no [nope] profile"},
		{"incomplete profile", s3.CredentialOptions{File: file, Profile: "broken", Getenv: env(nil)}, "", "", "want both"},
		{"half env", s3.CredentialOptions{Getenv: env(map[string]string{"AWS_ACCESS_KEY_ID": "X"})}, "", "", "both"},
		{"nothing", s3.CredentialOptions{Getenv: env(map[string]string{"HOME": dir})}, "", "", "no S3 credentials"},
		{"missing file", s3.CredentialOptions{File: filepath.Join(dir, "nope"), Getenv: env(nil)}, "", "", "no such file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k, err := s3.ResolveCredentials(tc.o)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want one mentioning %q", err, tc.wantErr)
				}
				for _, s := range []string{"defsecret", "teamsecret", "envsecret"} {
					if strings.Contains(err.Error(), s) {
						t.Fatalf("error shows a secret: %v", err)
					}
				}
				return
			}
			if err != nil || k.AccessKeyID != tc.id || k.SecretAccessKey.Reveal() != tc.secret {
				t.Fatalf("got %s/%v, %v; want %s", k.AccessKeyID, k.SecretAccessKey, err, tc.id)
			}
			if s := fmt.Sprintf("%v %+v %#v %s", k, k, k, k.Source); strings.Contains(s, tc.secret) {
				t.Fatalf("formatting keys shows the secret: %s", s)
			}
		})
	}
	// A malformed line is reported by number, never quoted.
	bad := filepath.Join(dir, "bad")
	if err := os.WriteFile(bad, []byte("[default]\nsupersecretline\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := s3.ResolveCredentials(s3.CredentialOptions{File: bad, Getenv: env(nil)})
	if err == nil || strings.Contains(err.Error(), "supersecretline") || !strings.Contains(err.Error(), "line 2") {
		t.Fatalf("malformed file: %v", err)
	}
}
