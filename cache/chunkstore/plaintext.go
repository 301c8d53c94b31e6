package chunkstore

import "errors"

// PlaintextAEAD seals nothing, for tests only (Config.NewAEAD): a raw scan
// of the state directory then finds the plaintext, which is how tests show
// that what must be gone is gone. It keeps the record layout (a 16-byte
// tag of zeros) so that sizes and offsets are those of the real sealing.
type PlaintextAEAD struct{}

func (PlaintextAEAD) NonceSize() int { return 12 }
func (PlaintextAEAD) Overhead() int  { return 16 }
func (PlaintextAEAD) Seal(dst, _, plaintext, _ []byte) []byte {
	dst = append(dst, plaintext...)
	return append(dst, make([]byte, 16)...)
}
func (PlaintextAEAD) Open(dst, _, ciphertext, _ []byte) ([]byte, error) {
	if len(ciphertext) < 16 {
		return nil, errors.New("short record")
	}
	return append(dst, ciphertext[:len(ciphertext)-16]...), nil
}
