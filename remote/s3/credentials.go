package s3

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Secret is a credential string. It formats as "***" under every fmt verb
// and in slog, so a Config or Keys value that ends up in a log line or an
// error message never shows it; Reveal is the only way to read it.
type Secret string

func (Secret) String() string   { return "***" }
func (Secret) GoString() string { return "***" }

// Format makes %x, %q and friends redact too.
func (s Secret) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte("***")) }

// MarshalText keeps encoders (slog's JSON handler, encoding/json) from
// printing it.
func (Secret) MarshalText() ([]byte, error) { return []byte("***"), nil }

// Reveal returns the secret itself, for the request signer.
func (s Secret) Reveal() string { return string(s) }

// Keys are static S3 credentials.
type Keys struct {
	AccessKeyID     string
	SecretAccessKey Secret
	SessionToken    Secret
	// Source says where they came from ("environment", a file and profile),
	// for error messages; it never holds a secret.
	Source string
}

// CredentialOptions says where to look for credentials.
type CredentialOptions struct {
	// File is an AWS shared-credentials file (INI: [profile] sections with
	// aws_access_key_id, aws_secret_access_key, aws_session_token). Given
	// explicitly (--s3-credentials-file), it is the only source consulted.
	File string
	// Profile is the section to read (default $AWS_PROFILE, else "default").
	Profile string
	// Getenv reads the environment (default os.Getenv); tests replace it.
	Getenv func(string) string
}

// ErrNoCredentials means no source held S3 credentials.
var ErrNoCredentials = errors.New("no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or pass --s3-credentials-file FILE")

// ResolveCredentials finds credentials, in this order: the file named in
// o.File; AWS_ACCESS_KEY_ID + AWS_SECRET_ACCESS_KEY (+ AWS_SESSION_TOKEN);
// the shared credentials file ($AWS_SHARED_CREDENTIALS_FILE, else
// ~/.aws/credentials) if it exists. Errors name the file, profile and key
// that were wrong, never a value read.
func ResolveCredentials(o CredentialOptions) (Keys, error) {
	getenv := o.Getenv
	if getenv == nil {
		getenv = os.Getenv
	}
	profile := o.Profile
	if profile == "" {
		profile = getenv("AWS_PROFILE")
	}
	if profile == "" {
		profile = "default"
	}
	if o.File != "" {
		return readCredentialsFile(o.File, profile)
	}
	id, secret := getenv("AWS_ACCESS_KEY_ID"), getenv("AWS_SECRET_ACCESS_KEY")
	switch {
	case id != "" && secret != "":
		return Keys{AccessKeyID: id, SecretAccessKey: Secret(secret), SessionToken: Secret(getenv("AWS_SESSION_TOKEN")), Source: "environment"}, nil
	case id != "" || secret != "":
		return Keys{}, errors.New("incomplete S3 credentials in the environment: set both AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")
	}
	shared := getenv("AWS_SHARED_CREDENTIALS_FILE")
	if shared == "" {
		if home := getenv("HOME"); home != "" {
			shared = filepath.Join(home, ".aws", "credentials")
		}
	}
	if shared != "" {
		if _, err := os.Stat(shared); err == nil {
			return readCredentialsFile(shared, profile)
		}
	}
	return Keys{}, ErrNoCredentials
}

func readCredentialsFile(path, profile string) (Keys, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Keys{}, fmt.Errorf("S3 credentials file: %w", err)
	}
	defer clear(data)
	section := ""
	found := false
	vals := make(map[string]string)
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' || line[0] == ';' {
			continue
		}
		if line[0] == '[' {
			if !strings.HasSuffix(line, "]") {
				return Keys{}, fmt.Errorf("S3 credentials file %s line %d: unterminated section header", path, n)
			}
			section = strings.TrimSpace(line[1 : len(line)-1])
			section = strings.TrimSpace(strings.TrimPrefix(section, "profile "))
			if section == profile {
				found = true
			}
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			// Never quote the line: it may be a secret.
			return Keys{}, fmt.Errorf("S3 credentials file %s line %d: want key = value", path, n)
		}
		if section == profile {
			vals[strings.ToLower(strings.TrimSpace(k))] = strings.TrimSpace(v)
		}
	}
	if err := sc.Err(); err != nil {
		return Keys{}, fmt.Errorf("S3 credentials file %s: %w", path, err)
	}
	if !found {
		return Keys{}, fmt.Errorf("S3 credentials file %s has no [%s] profile", path, profile)
	}
	k := Keys{
		AccessKeyID:     vals["aws_access_key_id"],
		SecretAccessKey: Secret(vals["aws_secret_access_key"]),
		SessionToken:    Secret(vals["aws_session_token"]),
		Source:          fmt.Sprintf("%s [%s]", path, profile),
	}
	if k.AccessKeyID == "" || k.SecretAccessKey == "" {
		return Keys{}, fmt.Errorf("S3 credentials file %s [%s]: want both aws_access_key_id and aws_secret_access_key", path, profile)
	}
	return k, nil
}
