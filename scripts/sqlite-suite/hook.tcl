# hook.tcl - the first script of every testfixture process in a hooked run
# of SQLite's test suite (see README.md beside this file).
#
# run.sh never patches the test tree. It starts each test file through
# testfixture-hook.sh, a wrapper that runs the real testfixture as
#
#     testfixture hook.tcl TEST-SCRIPT ARGS...
#
# with argv[0] set to the wrapper's own path. So [info nameofexec] names
# the wrapper, and every child testfixture the tests start (lock_common.tcl's
# launch_testfixture, crashsql's and walcrash4's crash.tcl, lock4's and
# lock6's helper scripts) runs this hook too. After installing the hook,
# this file runs TEST-SCRIPT exactly as testfixture's own main loop would.
#
# Environment (set by run.sh):
#   HYBRID_SUITE_MODE        ext      load the extension into every connection
#                            timeout  stock SQLite, but every connection opened
#                                     with the Tcl [sqlite3] command gets
#                                     SQLite's own busy handler ([db timeout])
#   HYBRID_SUITE_EXT         absolute path of libhybrid.so (mode ext)
#   HYBRID_SUITE_TIMEOUT_MS  busy timeout for every connection
#   HYBRID_SUITE_HOOK_LOG    optional; one line per load / deferred load
#
# How the extension reaches every connection (mode ext): a private :memory:
# connection runs load_extension(); the extension's entry point registers an
# auto-extension, which SQLite then runs on every connection the process
# opens. sqlite3_shutdown and sqlite3_reset_auto_extension drop
# auto-extensions, so both commands are wrapped to mark the extension as
# unloaded, and it is loaded again just before the next connection is opened
# (not at once: tester.tcl calls sqlite3_shutdown precisely so that it can
# then call sqlite3_config, which fails once a connection has initialised
# the library). A load never runs while a malloc fault is armed
# ([sqlite3_memdebug_pending] >= 0): it is done before the next
# [sqlite3_memdebug_fail N] arms one, or put off to the next open (the hook
# log counts those).
#
# The busy timeout (mode ext): the extension's own default is 5000 ms, which
# would make every test that expects SQLITE_BUSY wait 5 s. So every
# connection opened with the Tcl [sqlite3] command runs SELECT
# hybrid_busy_config('{"timeout_ms":N}') right after the open (not while a
# malloc fault is armed), and its statement is flushed from the Tcl
# statement cache. Connections opened otherwise (sqlite3_open_v2, C code,
# walthread's thread interpreters) keep 5000 ms: they never expect BUSY.

namespace eval ::hybrid_suite {
  variable mode       $::env(HYBRID_SUITE_MODE)
  variable ext        ""
  variable timeout_ms 200
  variable log        ""
  # 1 when the auto-extension must be (re)installed before the next open.
  variable need_load  1
  # 1 when each new connection must be told the suite's busy timeout.
  variable per_connection_config 1
  variable config_sql ""

  if {[info exists ::env(HYBRID_SUITE_EXT)]} { set ext $::env(HYBRID_SUITE_EXT) }
  if {[info exists ::env(HYBRID_SUITE_TIMEOUT_MS)]} {
    set timeout_ms $::env(HYBRID_SUITE_TIMEOUT_MS)
  }
  if {[info exists ::env(HYBRID_SUITE_HOOK_LOG)]} { set log $::env(HYBRID_SUITE_HOOK_LOG) }
  set config_sql "SELECT hybrid_busy_config('{\"timeout_ms\":$timeout_ms}')"

  if {$mode ni {ext timeout}} {
    puts stderr "HYBRID-SUITE-HOOK: HYBRID_SUITE_MODE must be ext or timeout, got '$mode'"
    exit 97
  }
  if {$mode eq "ext" && ![file readable $ext]} {
    puts stderr "HYBRID-SUITE-HOOK: cannot read the extension '$ext' (HYBRID_SUITE_EXT)"
    exit 97
  }
}

# Appends one line to the hook log (if any): pid, event, details.
proc ::hybrid_suite::note {event {detail ""}} {
  variable log
  if {$log eq ""} return
  if {[catch {
    set fd [open $log a]
    puts $fd "[pid] $event $detail"
    close $fd
  }]} {
    catch {close $fd}
  }
}

# True while the test harness has a malloc fault armed.
proc ::hybrid_suite::fault_armed {} {
  if {[catch {sqlite3_memdebug_pending} pending]} { return 0 }
  expr {$pending >= 0}
}

# Installs the extension's auto-extension if it is not in place. Exits the
# process (status 97) if the extension cannot be loaded: a run that silently
# went on without it would report stock results as the extension's.
proc ::hybrid_suite::ensure_loaded {} {
  variable need_load
  variable ext
  variable timeout_ms
  variable per_connection_config
  if {!$need_load} return
  if {[fault_armed]} {
    note deferred "malloc fault armed"
    return
  }
  set need_load 0
  set rc [catch {
    ::hybrid_suite::sqlite3_c ::hybrid_suite::loader :memory:
    ::hybrid_suite::loader enable_load_extension 1
    ::hybrid_suite::loader eval {SELECT load_extension($ext)}
    set policy [::hybrid_suite::loader eval {SELECT hybrid_busy_config()}]
  } msg]
  catch {::hybrid_suite::loader close}
  if {$rc} {
    puts stderr "HYBRID-SUITE-HOOK: load_extension('$ext') failed: $msg"
    exit 97
  }
  # Does the extension already default to the suite's timeout? Then no
  # per-connection SQL is needed.
  if {[regexp {"timeout_ms":\s*([0-9.eE+-]+)} $policy -> default_ms]
      && $default_ms == $timeout_ms} {
    set per_connection_config 0
  }
  note loaded "per_connection_config=$per_connection_config"
}

# Called after the Tcl [sqlite3] command opened connection $name (a command
# name, resolved in the caller's caller).
proc ::hybrid_suite::after_open {name} {
  variable mode
  variable timeout_ms
  variable per_connection_config
  variable config_sql
  if {$mode eq "timeout"} {
    uplevel 2 [list $name timeout $timeout_ms]
    return
  }
  if {!$per_connection_config || [fault_armed]} return
  # The connection may have been opened while a load was put off; then the
  # function does not exist and the connection keeps the stock behaviour.
  catch {
    uplevel 2 [list $name eval $config_sql]
    uplevel 2 [list $name cache flush]
  }
}

# The Tcl [sqlite3] command: opening a connection loads the extension first
# (mode ext) and configures the connection afterwards. Every other use
# (sqlite3 -version, -has-codec, ...) goes straight through.
rename sqlite3 ::hybrid_suite::sqlite3_c
proc sqlite3 {args} {
  if {[llength $args] >= 2 && [string index [lindex $args 0] 0] ne "-"} {
    if {$::hybrid_suite::mode eq "ext"} { ::hybrid_suite::ensure_loaded }
    set rc [catch {uplevel 1 [list ::hybrid_suite::sqlite3_c {*}$args]} result options]
    if {$rc} { return -options $options $result }
    ::hybrid_suite::after_open [lindex $args 0]
    return $result
  }
  uplevel 1 [list ::hybrid_suite::sqlite3_c {*}$args]
}

if {$::hybrid_suite::mode eq "ext"} {
  # The C-level open commands of test1.c: load first, nothing else.
  foreach cmd {sqlite3_open sqlite3_open16 sqlite3_open_v2} {
    if {[info commands $cmd] eq ""} continue
    rename $cmd ::hybrid_suite::${cmd}_c
    proc $cmd {args} [string map [list %CMD% $cmd] {
      ::hybrid_suite::ensure_loaded
      uplevel 1 [list ::hybrid_suite::%CMD%_c {*}$args]
    }]
  }
  # Arming a malloc fault: load first, while nothing is armed, so that a
  # test that shuts SQLite down and then opens its connections inside the
  # fault loop (pagerfault-31) still gets the extension. Disarming
  # (a negative count) goes straight through.
  if {[info commands sqlite3_memdebug_fail] ne ""} {
    rename sqlite3_memdebug_fail ::hybrid_suite::sqlite3_memdebug_fail_c
    proc sqlite3_memdebug_fail {args} {
      if {[string is integer -strict [lindex $args 0]] && [lindex $args 0] >= 0} {
        ::hybrid_suite::ensure_loaded
      }
      uplevel 1 [list ::hybrid_suite::sqlite3_memdebug_fail_c {*}$args]
    }
  }
  # Both of these drop every auto-extension, ours included.
  foreach cmd {sqlite3_shutdown sqlite3_reset_auto_extension} {
    if {[info commands $cmd] eq ""} continue
    rename $cmd ::hybrid_suite::${cmd}_c
    proc $cmd {args} [string map [list %CMD% $cmd] {
      set result [uplevel 1 [list ::hybrid_suite::%CMD%_c {*}$args]]
      set ::hybrid_suite::need_load 1
      return $result
    }]
  }
}

# Run the test script as testfixture's main loop (tclsqlite.c,
# tclsh_main_loop) would have: first argument is the script, the rest its
# arguments. argc keeps the stock value (the wrapper added one argument).
if {[llength $::argv] >= 1} {
  incr ::argc -1
  set ::argv0 [lindex $::argv 0]
  set ::argv [lrange $::argv 1 end]
  source $::argv0
} else {
  set line {}
  while {![eof stdin]} {
    if {$line ne ""} {
      puts -nonewline "> "
    } else {
      puts -nonewline "% "
    }
    flush stdout
    append line [gets stdin]
    if {[info complete $line]} {
      if {[catch {uplevel #0 $line} result]} {
        puts stderr "Error: $result"
      } elseif {$result ne ""} {
        puts $result
      }
      set line {}
    } else {
      append line \n
    }
  }
}
