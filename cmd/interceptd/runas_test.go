package main

import (
	"errors"
	"os/user"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// fakeAccounts knows root, alice (in two groups), nobody and group staff.
var fakeAccounts = accounts{
	byName: func(name string) (*user.User, error) {
		for _, u := range fakeUsers {
			if u.Username == name {
				return u, nil
			}
		}
		return nil, user.UnknownUserError(name)
	},
	byID: func(id string) (*user.User, error) {
		for _, u := range fakeUsers {
			if u.Uid == id {
				return u, nil
			}
		}
		return nil, errors.New("unknown")
	},
	group: func(name string) (*user.Group, error) {
		if name == "staff" {
			return &user.Group{Gid: "50", Name: "staff"}, nil
		}
		return nil, user.UnknownGroupError(name)
	},
	groupIDs: func(u *user.User) ([]string, error) {
		if u.Username == "alice" {
			return []string{"1000", "27"}, nil
		}
		return []string{u.Gid}, nil
	},
}

var fakeUsers = []*user.User{
	{Uid: "0", Gid: "0", Username: "root", HomeDir: "/root"},
	{Uid: "1000", Gid: "1000", Username: "alice", HomeDir: "/home/alice"},
	{Uid: "65534", Gid: "65534", Username: "nobody", HomeDir: "/nonexistent"},
}

func TestRunChoosesAnUnprivilegedUser(t *testing.T) {
	alice := runUser{UID: 1000, GID: 1000, Groups: []int{1000, 27}, Name: "alice", Home: "/home/alice"}
	tests := []struct {
		name    string
		spec    string
		env     map[string]string
		want    runUser
		wantErr string
	}{
		{"without --user or sudo, nobody", "", nil, runUser{UID: 65534, GID: 65534, Groups: []int{65534}, Name: "nobody", Home: "/nonexistent"}, ""},
		{"under sudo, the user who ran it, with their groups", "", map[string]string{"SUDO_USER": "alice", "SUDO_UID": "1000", "SUDO_GID": "1000"}, alice, ""},
		{"under sudo from root, nobody", "", map[string]string{"SUDO_USER": "root", "SUDO_UID": "0", "SUDO_GID": "0"}, runUser{UID: 65534, GID: 65534, Groups: []int{65534}, Name: "nobody", Home: "/nonexistent"}, ""},
		{"under sudo by a user with no account here, SUDO_UID and SUDO_GID", "", map[string]string{"SUDO_USER": "ldapbob", "SUDO_UID": "5000", "SUDO_GID": "5001"}, runUser{UID: 5000, GID: 5001, Groups: []int{5001}, Name: "ldapbob", Home: "/"}, ""},
		{"--user wins over sudo", "nobody", map[string]string{"SUDO_USER": "alice"}, runUser{UID: 65534, GID: 65534, Groups: []int{65534}, Name: "nobody", Home: "/nonexistent"}, ""},
		{"--user by name", "alice", nil, alice, ""},
		{"--user by UID with an account", "1000", nil, alice, ""},
		{"--user by UID without an account: its number as its group", "4242", nil, runUser{UID: 4242, GID: 4242, Groups: []int{4242}, Home: "/"}, ""},
		{"--user UID:GID", "4242:4343", nil, runUser{UID: 4242, GID: 4343, Groups: []int{4343}, Home: "/"}, ""},
		{"--user NAME:GROUP replaces the groups", "alice:staff", nil, runUser{UID: 1000, GID: 50, Groups: []int{50}, Name: "alice", Home: "/home/alice"}, ""},
		{"--user root is refused", "root", nil, runUser{}, "--privileged"},
		{"--user 0 is refused", "0:4343", nil, runUser{}, "--privileged"},
		{"an unknown user is an error naming it", "mallory", nil, runUser{}, `no user "mallory"`},
		{"an unknown group is an error naming it", "alice:wheel", nil, runUser{}, `no group "wheel"`},
		{"an empty user is an error", ":50", nil, runUser{}, "no user"},
		{"UID 2^32-1 is not a UID", "4294967295", nil, runUser{}, "no user"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := chooseUser(tt.spec, func(k string) string { return tt.env[k] }, fakeAccounts)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("got %+v, %v; want an error mentioning %q", got, err, tt.wantErr)
				}
				return
			}
			if err != nil || !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %+v, %v; want %+v", got, err, tt.want)
			}
		})
	}
}

func TestRunSetsHomeUserAndLognameOfTheUser(t *testing.T) {
	env := []string{"PATH=/usr/bin", "HOME=/root", "USER=root", "LOGNAME=root", "TERM=xterm"}
	got := runEnv(env, runUser{Name: "alice", Home: "/home/alice"})
	want := []string{"PATH=/usr/bin", "TERM=xterm", "HOME=/home/alice", "USER=alice", "LOGNAME=alice"}
	if !slices.Equal(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
	if got := runEnv(env, runUser{Home: "/"}); slices.ContainsFunc(got, func(kv string) bool { return strings.HasPrefix(kv, "USER=") }) {
		t.Errorf("a user without an account kept USER: %q", got)
	}
}

func TestRunPassesTheUserToItsSecondHalfIntact(t *testing.T) {
	u := runUser{UID: 1000, GID: 50, Groups: []int{50, 27}, Name: "alice", Home: "/home/alice"}
	want := []string{"--uid", "1000", "--gid", "50", "--groups", "50,27", "--home", "/home/alice", "--login", "alice"}
	if got := u.args(); !slices.Equal(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
}
