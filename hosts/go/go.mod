// For module-mode builds against upstream mattn/go-sqlite3 (needs the Go
// module proxy). hosts/run.sh builds in GOPATH mode against Debian's
// golang-github-mattn-go-sqlite3-dev when that is installed.
module sqlite-hybrid/hosts/go

go 1.19

require github.com/mattn/go-sqlite3 v1.14.16
