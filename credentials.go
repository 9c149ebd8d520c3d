package prefork

import (
	"math"
	"net"
	"os"
	"os/user"
	"slices"
	"strconv"
	"syscall"

	"github.com/prefork-go/prefork/internal/sys"
)

// privileges is what the master asks of the system to check Manager.User,
// Group and the socket file's owner: whom it runs as, which users and
// groups exist, and the lowest port that any user may bind. Tests make
// their own.
type privileges struct {
	euid, egid            int
	firstUnprivilegedPort func() int
	userByName, userByID  func(string) (*user.User, error)
	groupByName           func(string) (*user.Group, error)
	groupByID             func(string) (*user.Group, error)
}

// systemPrivileges asks the system. Without cgo, os/user reads
// /etc/passwd and /etc/group alone; with it, the C library's name services
// (LDAP, say) too.
func systemPrivileges() privileges {
	return privileges{
		euid: os.Geteuid(), egid: os.Getegid(),
		firstUnprivilegedPort: sys.FirstUnprivilegedPort,
		userByName:            user.Lookup, userByID: user.LookupId,
		groupByName: user.LookupGroup, groupByID: user.LookupGroupId,
	}
}

// identities checks User, Group, SocketMode, SocketUser and SocketGroup,
// once the master knows what it will serve, and sets whom the children run
// as and what the master makes of the socket's file.
func (c *config) identities(m *Manager, p privileges) error {
	var err error
	if c.credential, err = p.credential(m.User, m.Group); err != nil {
		return err
	}
	if c.credential != nil && c.reusePort {
		// Each child binds a socket of its own, as User: the master cannot
		// bind a privileged port for it.
		for _, s := range c.sockets {
			_, service, _ := net.SplitHostPort(s.addr) // checkAddr has checked it
			port, _ := net.LookupPort(s.network, service)
			if first := p.firstUnprivilegedPort(); port != 0 && port < first {
				return invalid("Manager.ReusePort makes each child bind its own socket, as User %q, who cannot bind port %d (%sAddr, below %d): unset ReusePort, so that the master binds it, or use a port of %d or more", m.User, port, s.field, first, first)
			}
		}
	}
	if c.socketFile, err = p.socketFile(m.SocketMode, m.SocketUser, m.SocketGroup); err != nil || c.socketFile == nil {
		return err
	}
	if slices.ContainsFunc(c.sockets, socketSpec.hasFile) {
		return nil // the master sets up those; SocketMode has nothing to do with the others
	}
	if len(c.sockets) > 1 {
		return invalid("Manager.SocketMode, SocketUser and SocketGroup set up the files of the Unix sockets that the master binds, and it binds no Unix socket with a file: unset them, or set them where the sockets are made (SocketMode=, SocketUser= and SocketGroup= in a .socket unit)")
	}
	switch s := c.sockets[0]; {
	case s.given != nil:
		return invalid("Manager.SocketMode, SocketUser and SocketGroup set up the file of a socket that the master binds, but the pool is given one (%s): set them where it is made (SocketMode=, SocketUser= and SocketGroup= in a .socket unit)", s.from)
	case !sys.IsUnix(s.network):
		return invalid("Manager.SocketMode, SocketUser and SocketGroup apply to the file of a Unix socket, not to %sNetwork %q; unset them", s.field, s.network)
	default:
		return invalid("%sAddr %q is an abstract Unix socket, which has no file: unset SocketMode, SocketUser and SocketGroup", s.field, s.addr)
	}
}

// credential decides whom the children run as: nil for the master's own
// user and groups.
//
// The credential is applied by os/exec in the new process, between fork
// and exec: setgroups, setgid, then setuid, which, called by root, sets
// the real, effective and saved ids at once, and the kernel then drops
// every capability. So the child program never runs as root, not even its
// package initialization, and nothing in it can become root again. (A
// child that dropped its privileges itself would run as root until then,
// and a setuid call in a Go program must reach every thread.) Groups is
// empty, not nil, and NoSetGroups false: the child keeps none of root's
// supplementary groups, nor does it get User's.
func (p privileges) credential(userName, groupName string) (*syscall.Credential, error) {
	if userName == "" {
		if groupName != "" {
			return nil, invalid("Manager.Group is %q but User is not set: the children would still run as the master's user; set User too", groupName)
		}
		return nil, nil
	}
	uid, u, err := account("User", userName, p.userByName, p.userByID, func(u *user.User) string { return u.Uid })
	if err != nil {
		return nil, err
	}
	var gid uint32
	switch {
	case groupName != "":
		if gid, _, err = account("Group", groupName, p.groupByName, p.groupByID, func(g *user.Group) string { return g.Gid }); err != nil {
			return nil, err
		}
	case u == nil:
		return nil, invalid("Manager.User %q is a number that no user of this system has: set Group too (a numeric id will do)", userName)
	default:
		if gid, err = parseID("User", userName, u.Gid); err != nil {
			return nil, err
		}
	}
	if uid == 0 {
		return nil, invalid("Manager.User %q is root (uid 0): the children would keep every privilege; name an unprivileged user, such as \"nobody\", or leave User empty", userName)
	}
	if p.euid != 0 {
		if int(uid) == p.euid && int(gid) == p.egid {
			// Nothing to change, and nothing the master may change: without
			// privilege it cannot clear its supplementary groups.
			return nil, nil
		}
		return nil, invalid("Manager.User %q and Group (uid %d, gid %d) are not the master's own (uid %d, gid %d): only a master that runs as root can start its children as another user; start the program as root, or leave User and Group empty", userName, uid, gid, p.euid, p.egid)
	}
	return &syscall.Credential{Uid: uid, Gid: gid, Groups: []uint32{}, NoSetGroups: false}, nil
}

// socketFile checks SocketMode, SocketUser and SocketGroup: nil when none
// is set.
func (p privileges) socketFile(mode os.FileMode, owner, group string) (*sys.SocketFile, error) {
	if mode == 0 && owner == "" && group == "" {
		return nil, nil
	}
	if mode&^os.ModePerm != 0 {
		return nil, invalid("Manager.SocketMode %v has bits other than permissions; use permission bits alone, such as 0o660", mode)
	}
	f := &sys.SocketFile{Mode: mode, UID: -1, GID: -1}
	if owner != "" {
		uid, _, err := account("SocketUser", owner, p.userByName, p.userByID, func(u *user.User) string { return u.Uid })
		if err != nil {
			return nil, err
		}
		if p.euid != 0 && int(uid) != p.euid {
			return nil, invalid("Manager.SocketUser %q (uid %d) is not the master's user (uid %d): only root can give a file to another user; start the program as root, or leave SocketUser empty", owner, uid, p.euid)
		}
		f.UID = int(uid)
	}
	if group != "" {
		gid, _, err := account("SocketGroup", group, p.groupByName, p.groupByID, func(g *user.Group) string { return g.Gid })
		if err != nil {
			return nil, err
		}
		f.GID = int(gid)
	}
	return f, nil
}

// account resolves s, the value of Manager's field, which names a user or
// a group, to its id. A number is the id: it needs no entry in the
// system's database (containers often run as ids that have none), and
// entry is what byID finds for it, or nil. A name must have an entry, and
// idOf reads the id from it.
func account[T any](field, s string, byName, byID func(string) (*T, error), idOf func(*T) string) (id uint32, entry *T, err error) {
	// (uid_t)-1 means "leave it as it is" to the kernel.
	if n, err := strconv.ParseUint(s, 10, 32); err == nil && n != math.MaxUint32 {
		entry, _ = byID(s)
		return uint32(n), entry, nil
	}
	if entry, err = byName(s); err != nil {
		return 0, nil, invalid("Manager.%s %q: %v; give the name of one that exists, or a numeric id", field, s, err)
	}
	id, err = parseID(field, s, idOf(entry))
	return id, entry, err
}

// parseID reads an id that the system gave for s.
func parseID(field, s, id string) (uint32, error) {
	n, err := strconv.ParseUint(id, 10, 32)
	if err != nil {
		return 0, invalid("Manager.%s %q: the system gives it the id %q, which is not a number", field, s, id)
	}
	return uint32(n), nil
}
