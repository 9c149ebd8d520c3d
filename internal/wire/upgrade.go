package wire

import (
	"encoding/json"
	"fmt"
)

// EnvUpgrade marks a master started by the master it succeeds.
const EnvUpgrade = "PREFORK_UPGRADE"

// UpgradeVersion is the version of the handover to a successor, apart from
// the children's protocol (Version): a master and its successor are
// different builds.
const UpgradeVersion = 1

// The successor's descriptors.
const (
	FDUpgradeLink        = 3
	FDFirstUpgradeSocket = 4
)

// Upgrade is what a master hands its successor.
type Upgrade struct {
	Version int             `json:"version"`
	Sockets []UpgradeSocket `json:"sockets"`
}

// UpgradeSocket is one socket handed to a successor.
type UpgradeSocket struct {
	// Name is the socket's name in the master that hands it over.
	Name string `json:"name"`
	// Key is the network and address, as configured, of a socket that
	// master bound ("tcp :8080"), by which a successor that does not name
	// the socket finds it; empty for a socket the master was given.
	Key string `json:"key,omitempty"`
	FD  int    `json:"fd"`
	// Owned says that the master created the socket: its successor
	// removes its file and closes its intake when it stops, as its
	// creator would have.
	Owned bool `json:"owned,omitempty"`
}

// EncodeUpgrade is the value of EnvUpgrade.
func EncodeUpgrade(u Upgrade) string {
	u.Version = UpgradeVersion
	b, _ := json.Marshal(u) // cannot fail for these types
	return string(b)
}

// DecodeUpgrade parses the value of EnvUpgrade.
func DecodeUpgrade(s string) (Upgrade, error) {
	var u Upgrade
	if err := json.Unmarshal([]byte(s), &u); err != nil {
		return u, fmt.Errorf("%s: %w", EnvUpgrade, err)
	}
	if u.Version != UpgradeVersion {
		return u, fmt.Errorf("%s: handed over by a master of handover version %d, not %d", EnvUpgrade, u.Version, UpgradeVersion)
	}
	seen := map[int]bool{}
	for _, s := range u.Sockets {
		if s.FD < FDFirstUpgradeSocket || seen[s.FD] {
			return u, fmt.Errorf("%s: descriptor %d is not a handed socket's", EnvUpgrade, s.FD)
		}
		seen[s.FD] = true
	}
	return u, nil
}
