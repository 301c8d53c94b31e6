package remote

import "path"

// TempPrefix starts the name of every partial upload. Handle.Valid rejects
// names starting with a dot, so a temporary file can never be mistaken for an
// object and listings skip them.
const TempPrefix = ".tmp-"

// ObjectPath is the slash-separated path of h relative to the repository
// root, shared by the directory-shaped backends (file, sftp):
//
//	config
//	keys/<name>
//	packs/<name[:2]>/<name>
//	index/<name> ... one folder per Type
//
// Packs fan out over the first two characters of their name so that no
// folder grows past a few thousand entries in a multi-terabyte repository.
func ObjectPath(h Handle) string {
	switch h.Type {
	case Config:
		return string(Config)
	case Pack:
		return path.Join(string(Pack), fanOut(h.Name), h.Name)
	default:
		return path.Join(string(h.Type), h.Name)
	}
}

func fanOut(name string) string {
	if len(name) < 2 {
		return name
	}
	return name[:2]
}
