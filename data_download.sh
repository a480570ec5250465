#!/usr/bin/env bash
# Fetch, verify and unpack the real data sets the notebooks use, into <root>/<name>.
#
#   ./data_download.sh [--root DIR] [--list] [--dry-run] [--keep-archives] NAME... | all
#
# The sources (URL, size, checksum, licence, layout) live in ONE table, wsslib/data/sources.tsv,
# which the Python package reads too. What the script guarantees:
#   * downloads go to <root>/.wsslib/downloads/<file>.part and resume (curl -C - / wget -c) after
#     an interruption, both within a run (3 tries) and across runs;
#   * every file is checked before anything is unpacked: against the md5/sha256 pinned in the table,
#     or, where no hash is published, against the sha256 recorded on first use (trust on first
#     use) in <root>/.wsslib/checksums.lock (recorded once the first copy has installed), with a
#     warning that says so;
#   * archives unpack into a temporary folder under <root>/.wsslib/tmp, are checked for the expected
#     layout, then renamed into place; a failure removes that temporary folder and touches nothing
#     that was already under <root>; existing files are never overwritten;
#   * a second run finds the installed files and does nothing (and says so);
#   * sets behind a login or a licence click print the steps to fetch them by hand and the folder
#     (<root>/downloads) to put the file in; the next run verifies and unpacks it.
#
# Environment: WSSLIB_DATA (default root, else ./data), WSSLIB_MIRROR (base URL that replaces the
# official hosts: files are fetched from $WSSLIB_MIRROR/<name>/<file>, also for manual sets),
# WSSLIB_DOWNLOADER (curl or wget; default: whichever exists, curl first), WSSLIB_SOURCES (another
# table, for tests), WSSLIB_RETRIES (tries per file, default 3), WSSLIB_RETRY_WAIT (seconds, 2).
#
# Exit status: 0 done (or nothing to do), 1 a download/check/unpack failed, 2 usage error,
# 3 some set needs the manual steps printed above.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SOURCES="${WSSLIB_SOURCES:-$HERE/wsslib/data/sources.tsv}"
PROG="data_download.sh"

usage() {
    cat <<EOF
Usage: ./$PROG [--root DIR] [--list] [--dry-run] [--keep-archives] NAME... | all

Fetch, verify and unpack data sets into DIR/<name> (DIR: --root, else \$WSSLIB_DATA, else ./data).

  --root DIR        data folder (the loaders look for DIR/<name> when WSSLIB_DATA=DIR)
  --list            list every data set with its size, access, checksum and source, then exit
  --dry-run         say what would be done; download and write nothing
  --keep-archives   keep downloaded archives in DIR/.wsslib/downloads after unpacking
  -h, --help        this help

Names: $(known_names | tr '\n' ' ')(or: all)
Environment: WSSLIB_MIRROR=<base URL> fetches <base>/<name>/<file> instead of the official hosts.
EOF
}

die_usage() { echo "$PROG: error: $*" >&2; echo "Run ./$PROG --help for usage." >&2; exit 2; }
warn() { echo "$PROG: WARNING: $*" >&2; }
err() { echo "$PROG: error: $*" >&2; }
info() { echo "$*"; }

[ -f "$SOURCES" ] || { echo "$PROG: error: the source table $SOURCES is missing" >&2; exit 2; }

# ---------------------------------------------------------------------------------------------
# the table: parallel arrays, one entry per row (bash 3 compatible: no associative arrays)
R_NAME=() R_FILE=() R_URL=() R_SIZE=() R_SUM=() R_ACCESS=() R_UNPACK=() R_DEST=() R_PROVIDES=() R_LICENCE=() R_STEPS=()
n_rows=0
while IFS=$'\t' read -r c_name c_file c_url c_size c_sum c_access c_unpack c_dest c_provides c_licence c_steps c_extra; do
    case "$c_name" in ''|'#'*|name) continue ;; esac
    if [ -z "${c_steps:-}" ] || [ -n "${c_extra:-}" ]; then
        echo "$PROG: error: $SOURCES: the row of '$c_name' ($c_file) does not have 11 tab-separated fields" >&2
        exit 2
    fi
    R_NAME[n_rows]=$c_name R_FILE[n_rows]=$c_file R_URL[n_rows]=$c_url R_SIZE[n_rows]=$c_size
    R_SUM[n_rows]=$c_sum R_ACCESS[n_rows]=$c_access R_UNPACK[n_rows]=$c_unpack R_DEST[n_rows]=$c_dest
    R_PROVIDES[n_rows]=$c_provides R_LICENCE[n_rows]=$c_licence R_STEPS[n_rows]=$c_steps
    n_rows=$((n_rows + 1))
done < "$SOURCES"
[ "$n_rows" -gt 0 ] || { echo "$PROG: error: $SOURCES holds no row" >&2; exit 2; }

known_names() {
    local i last=""
    for ((i = 0; i < n_rows; i++)); do
        if [ "${R_NAME[i]}" != "$last" ]; then echo "${R_NAME[i]}"; last=${R_NAME[i]}; fi
    done
}

is_known() {  # no pipe into grep -q: under pipefail its early exit can fail the writer (SIGPIPE)
    local i
    for ((i = 0; i < n_rows; i++)); do [ "${R_NAME[i]}" = "$1" ] && return 0; done
    return 1
}

# ---------------------------------------------------------------------------------------------
# arguments
ROOT="" LIST=0 DRY=0 KEEP=0 NAMES=()
while [ $# -gt 0 ]; do
    case "$1" in
        --root) [ $# -ge 2 ] || die_usage "--root needs a folder"; ROOT=$2; shift 2 ;;
        --root=*) ROOT=${1#--root=}; shift ;;
        --list) LIST=1; shift ;;
        --dry-run) DRY=1; shift ;;
        --keep-archives) KEEP=1; shift ;;
        -h|--help) usage; exit 0 ;;
        --) shift; NAMES+=("$@"); break ;;
        -*) die_usage "unknown option $1" ;;
        *) NAMES+=("$1"); shift ;;
    esac
done

print_list() {
    local i kind
    printf '%-19s %-36s %-9s %-7s %-8s %s\n' NAME FILE SIZE ACCESS CHECKSUM SOURCE
    for ((i = 0; i < n_rows; i++)); do
        case "${R_SUM[i]}" in
            md5:*) kind="md5" ;;
            sha256:*) kind="sha256" ;;
            *) kind="TOFU" ;;
        esac
        printf '%-19s %-36s %-9s %-7s %-8s %s\n' "${R_NAME[i]}" "${R_FILE[i]}" "${R_SIZE[i]}" \
            "${R_ACCESS[i]}" "$kind" "${R_URL[i]}"
    done
    echo
    echo "CHECKSUM: md5/sha256 = pinned in wsslib/data/sources.tsv; TOFU = no published hash: the"
    echo "sha256 is recorded on first download in <root>/.wsslib/checksums.lock and checked after that."
    echo "ACCESS manual = behind a login or licence click: the script prints the steps."
    echo "Licences:"
    local last=""
    for ((i = 0; i < n_rows; i++)); do
        if [ "${R_NAME[i]}" != "$last" ]; then echo "  ${R_NAME[i]}: ${R_LICENCE[i]}"; last=${R_NAME[i]}; fi
    done
}

if [ "$LIST" = 1 ]; then print_list; exit 0; fi
[ ${#NAMES[@]} -gt 0 ] || { usage >&2; exit 2; }

# "all" expands; unknown names stop everything before anything is done
SELECTED=()
for nm in "${NAMES[@]}"; do
    if [ "$nm" = all ]; then
        while IFS= read -r k; do SELECTED+=("$k"); done < <(known_names)
    elif is_known "$nm"; then
        SELECTED+=("$nm")
    else
        die_usage "unknown data set '$nm'; known: $(known_names | tr '\n' ' ')"
    fi
done

if [ -z "$ROOT" ]; then ROOT=${WSSLIB_DATA:-$HERE/data}; fi
case "$ROOT" in /*) ;; *) ROOT="$(pwd)/$ROOT" ;; esac
ROOT=${ROOT%/}
STATE="$ROOT/.wsslib"
DL="$STATE/downloads"
LOCK="$STATE/checksums.lock"
DONE="$STATE/installed"
DROP="$ROOT/downloads"
MIRROR=${WSSLIB_MIRROR:-}
MIRROR=${MIRROR%/}
RETRIES=${WSSLIB_RETRIES:-3}
RETRY_WAIT=${WSSLIB_RETRY_WAIT:-2}

# ---------------------------------------------------------------------------------------------
# tools
DOWNLOADER=""
pick_downloader() {
    [ -z "$DOWNLOADER" ] || return 0
    local want=${WSSLIB_DOWNLOADER:-}
    if [ -n "$want" ]; then
        case "$want" in curl|wget) ;; *) err "WSSLIB_DOWNLOADER must be curl or wget, got '$want'"; exit 2 ;; esac
        command -v "$want" >/dev/null 2>&1 || { err "WSSLIB_DOWNLOADER=$want, but $want is not installed"; exit 1; }
        DOWNLOADER=$want
    elif command -v curl >/dev/null 2>&1; then DOWNLOADER=curl
    elif command -v wget >/dev/null 2>&1; then DOWNLOADER=wget
    else err "neither curl nor wget is installed: install one of them (e.g. apt-get install curl)"; exit 1
    fi
}

# hash_of ALGO FILE -> hex digest on stdout
hash_of() {
    local algo=$1 f=$2
    case "$algo" in
        sha256)
            if command -v sha256sum >/dev/null 2>&1; then sha256sum "$f" | cut -d' ' -f1
            elif command -v shasum >/dev/null 2>&1; then shasum -a 256 "$f" | cut -d' ' -f1
            else python3 -c 'import hashlib,sys; print(hashlib.sha256(open(sys.argv[1],"rb").read()).hexdigest())' "$f"; fi ;;
        md5)
            if command -v md5sum >/dev/null 2>&1; then md5sum "$f" | cut -d' ' -f1
            elif command -v md5 >/dev/null 2>&1; then md5 -q "$f"
            else python3 -c 'import hashlib,sys; print(hashlib.md5(open(sys.argv[1],"rb").read()).hexdigest())' "$f"; fi ;;
        *) err "unknown checksum kind '$algo' in $SOURCES"; return 1 ;;
    esac
}

# fetch URL OUT: one resumable attempt; returns the downloader's status
fetch() {
    local url=$1 out=$2 rc=0
    if [ "$DOWNLOADER" = curl ]; then
        local prog=(-sS); [ -t 2 ] && prog=(--progress-bar)
        if [ -s "$out" ]; then  # OUT complete already (a run stopped between download and check)?
            local have remote
            have=$(wc -c < "$out" | tr -d ' ')
            remote=$(curl -sIL --connect-timeout 30 "$url" 2>/dev/null | tr -d '\r' |
                awk 'tolower($1) == "content-length:" { n = $2 } END { print n }') || remote=""
            if [ -n "$remote" ] && [ "$remote" = "$have" ]; then return 0; fi
        fi
        # -C - resumes from the size of OUT; -f turns HTTP errors into a non-zero status
        curl -fL --connect-timeout 30 "${prog[@]}" -C - -o "$out" "$url" || rc=$?
        if [ "$rc" = 33 ]; then  # the server ignores Range: start this file again from the beginning
            warn "$url: the server cannot resume downloads; starting again from the beginning"
            rm -f "$out"
            rc=0
            curl -fL --connect-timeout 30 "${prog[@]}" -o "$out" "$url" || rc=$?
        fi
    else
        local prog=(-nv); [ -t 2 ] && prog=(-q --show-progress)
        wget "${prog[@]}" --tries=1 --timeout=30 -c -O "$out" "$url" || rc=$?
    fi
    return "$rc"
}

# ---------------------------------------------------------------------------------------------
# layout checks: "a|b,c" = (a or b) and c; paths relative to BASE, globs allowed
path_exists() { compgen -G "$1" >/dev/null 2>&1; }

provides_ok() {  # provides_ok PROVIDES BASE
    local groups alt ok g
    IFS=',' read -r -a groups <<< "$1"
    for g in "${groups[@]}"; do
        ok=0
        IFS='|' read -r -a alts <<< "$g"
        for alt in "${alts[@]}"; do
            if path_exists "$2/$alt"; then ok=1; break; fi
        done
        [ "$ok" = 1 ] || return 1
    done
    return 0
}

# the provides groups that fall under DEST, checked inside an unpack folder TMP (relative to DEST)
provides_ok_in_tmp() {  # PROVIDES DEST TMP
    local groups g alt ok applies
    IFS=',' read -r -a groups <<< "$1"
    for g in "${groups[@]}"; do
        ok=0 applies=0
        IFS='|' read -r -a alts <<< "$g"
        for alt in "${alts[@]}"; do
            case "$alt" in
                "$2"/*) applies=1; if path_exists "$3/${alt#"$2"/}"; then ok=1; break; fi ;;
            esac
        done
        if [ "$applies" = 1 ] && [ "$ok" = 0 ]; then return 1; fi
    done
    return 0
}

describe_found() {  # one line per provided path: path and number of files under it
    local groups g alt p
    IFS=',' read -r -a groups <<< "$1"
    for g in "${groups[@]}"; do
        IFS='|' read -r -a alts <<< "$g"
        for alt in "${alts[@]}"; do
            while IFS= read -r p; do
                if [ -d "$p" ]; then info "    $p ($(find "$p" -type f | wc -l | tr -d ' ') files)"
                else info "    $p ($(wc -c < "$p" | tr -d ' ') bytes)"; fi
            done < <(compgen -G "$2/$alt" || true)
        done
    done
}

lock_lookup() {  # NAME FILE -> recorded sha256 (or nothing)
    [ -f "$LOCK" ] || return 0
    awk -F'\t' -v n="$1" -v f="$2" '$1 == n && $2 == f { h = $3 } END { if (h != "") print h }' "$LOCK"
}

# verify ROW FILE OWNED -> 0 ok, 1 mismatch (message printed)
verify() {
    local i=$1 f=$2 owned=$3
    local name=${R_NAME[i]} file=${R_FILE[i]} sum=${R_SUM[i]} algo expected actual recorded
    if [ "$sum" = tofu ]; then
        actual=$(hash_of sha256 "$f")
        recorded=$(lock_lookup "$name" "$file")
        if [ -z "$recorded" ]; then  # first use: recorded by record_tofu once the file has installed
            TOFU_NEW=$actual
            info "  $file: sha256 $actual (no published hash; recorded once it has installed)"
            return 0
        fi
        algo=sha256 expected=$recorded
    else
        algo=${sum%%:*} expected=${sum#*:}
        actual=$(hash_of "$algo" "$f")
    fi
    if [ "$actual" = "$expected" ]; then
        info "  $file: $algo ok ($actual)"
        return 0
    fi
    if [ "$sum" = tofu ]; then
        err "$name/$file: sha256 $actual differs from $expected recorded on first use in $LOCK." \
            "The file changed since then (a corrupt download, or a new release): check it; to accept the new file," \
            "delete its line from $LOCK and run again."
    else
        err "$name/$file: $algo checksum mismatch: expected $expected (pinned in $SOURCES), got $actual."
    fi
    if [ "$owned" = 1 ]; then
        mv -f "$f" "$DL/$file.bad"
        err "  the download was moved to $DL/$file.bad for inspection; nothing under $ROOT was changed." \
            "Run again to download afresh (check WSSLIB_MIRROR if you set it)."
    else
        err "  your file $f was left as it is; nothing under $ROOT was changed."
    fi
    return 1
}

record_tofu() {  # ROW: after a successful install, record the sha256 of a first-use file
    local i=$1
    [ -n "$TOFU_NEW" ] || return 0
    mkdir -p "$STATE"
    printf '%s\t%s\t%s\t%s\t%s\n' "${R_NAME[i]}" "${R_FILE[i]}" "$TOFU_NEW" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$CUR_SRC" >> "$LOCK"
    warn "${R_NAME[i]}/${R_FILE[i]}: no checksum is published for this file, so none is pinned in the repository." \
         "Its sha256 $TOFU_NEW is now recorded in $LOCK (trust on first use); later downloads must match it." \
         "To be sure of this copy, compare the hash with a colleague's or the provider's."
    TOFU_NEW=""
}

set_aside() {  # ROW ARCHIVE OWNED: a downloaded archive that did not install is kept as .bad
    if [ "$3" = 1 ] && [ -f "$2" ]; then
        mv -f "$2" "$DL/${R_FILE[$1]}.bad"
        err "  the download was moved to $DL/${R_FILE[$1]}.bad; run again to download it afresh."
    fi
}

TMP_TO_CLEAN=""
cleanup() { if [ -n "$TMP_TO_CLEAN" ] && [ -d "$TMP_TO_CLEAN" ]; then rm -rf "$TMP_TO_CLEAN"; fi; }
trap cleanup EXIT
trap 'cleanup; echo "$PROG: interrupted; unpacked nothing half-way (partial downloads resume next time)" >&2; exit 130' INT TERM

# unpack ROW ARCHIVE OWNED -> 0 ok, 1 failure (nothing left behind)
unpack() {
    local i=$1 archive=$2 owned=$3
    local name=${R_NAME[i]} file=${R_FILE[i]} kind=${R_UNPACK[i]} dest=${R_DEST[i]} provides=${R_PROVIDES[i]}
    local tmp entry target conflicts=()
    mkdir -p "$STATE/tmp"
    tmp=$(mktemp -d "$STATE/tmp/$name.XXXXXX")
    TMP_TO_CLEAN=$tmp
    if [ "$kind" = file ]; then info "  placing $file ..."; else info "  unpacking $file ..."; fi
    local rc=0
    case "$kind" in
        zip)
            if command -v unzip >/dev/null 2>&1; then unzip -q "$archive" -d "$tmp" || rc=$?
            else python3 -m zipfile -e "$archive" "$tmp" || rc=$?; fi ;;
        tar) tar -xf "$archive" -C "$tmp" || rc=$? ;;
        tar.gz) tar -xzf "$archive" -C "$tmp" || rc=$? ;;
        file) cp "$archive" "$tmp/$file" || rc=$? ;;
        *) err "$SOURCES: unknown unpack kind '$kind' for $name/$file"; rc=1 ;;
    esac
    if [ "$rc" != 0 ]; then
        err "$name/$file: could not unpack $archive (status $rc): the archive is damaged or incomplete." \
            "Nothing was installed; the partial unpack was removed."
        rm -rf "$tmp"; TMP_TO_CLEAN=""
        set_aside "$i" "$archive" "$owned"
        return 1
    fi
    if ! provides_ok_in_tmp "$provides" "$dest" "$tmp"; then
        err "$name/$file: the archive does not have the expected layout (expected under $ROOT: $provides;" \
            "its top level holds: $(cd "$tmp" && ls -A | head -5 | tr '\n' ' ')). Nothing was installed."
        rm -rf "$tmp"; TMP_TO_CLEAN=""
        set_aside "$i" "$archive" "$owned"
        return 1
    fi
    shopt -s dotglob nullglob
    for entry in "$tmp"/*; do
        target="$ROOT/$dest/$(basename "$entry")"
        if [ -e "$target" ] || [ -L "$target" ]; then conflicts+=("$target"); fi
    done
    if [ ${#conflicts[@]} -gt 0 ]; then
        shopt -u dotglob nullglob
        err "$name/$file: refusing to overwrite what is already there: ${conflicts[*]}." \
            "Move it away (or delete it) and run again. Nothing was changed."
        rm -rf "$tmp"; TMP_TO_CLEAN=""
        return 1
    fi
    mkdir -p "$ROOT/$dest"
    for entry in "$tmp"/*; do
        mv "$entry" "$ROOT/$dest/"
    done
    shopt -u dotglob nullglob
    rmdir "$tmp"; TMP_TO_CLEAN=""
    mkdir -p "$DONE/$name"
    printf '%s\t%s\n' "$file" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" > "$DONE/$name/$file"
    if [ "$owned" = 1 ] && [ "$KEEP" = 0 ]; then rm -f "$archive"; fi
    info "  installed into $ROOT/$dest"
    return 0
}

# download ROW: fetch (resuming), verify; sets GOT to the verified archive. 0 ok, 1 failure
download() {
    local i=$1
    local name=${R_NAME[i]} file=${R_FILE[i]}
    local part="$DL/$file.part" final="$DL/$file" attempt=1
    mkdir -p "$DL"
    if [ -f "$final" ]; then
        info "  found the earlier download $final; checking it"
        if verify "$i" "$final" 1; then GOT=$final; return 0; fi
        info "  downloading it again"
    fi
    if [ -s "$part" ]; then info "  resuming $part ($(wc -c < "$part" | tr -d ' ') bytes so far)"; fi
    info "  downloading $CUR_SRC"
    while :; do
        if fetch "$CUR_SRC" "$part"; then break; fi
        if [ "$attempt" -ge "$RETRIES" ]; then
            err "$name/$file: the download from $CUR_SRC failed $attempt times. What arrived is kept in" \
                "$part and the next run resumes from there. Nothing under $ROOT/${R_DEST[i]} was changed."
            return 1
        fi
        attempt=$((attempt + 1))
        warn "$name/$file: the download was interrupted; resuming (try $attempt of $RETRIES)"
        sleep "$RETRY_WAIT"
    done
    verify "$i" "$part" 1 || return 1  # a mismatching download was moved to .bad
    mv -f "$part" "$final"
    GOT=$final
    return 0
}

print_manual() {
    local i=$1
    local name=${R_NAME[i]} file=${R_FILE[i]} n=1 step steps
    steps=${R_STEPS[i]//<root>/$ROOT}
    echo
    echo "== $name: $file must be fetched by hand (login or licence) =="
    echo "  source:  ${R_URL[i]}"
    echo "  licence: ${R_LICENCE[i]}"
    echo "  steps:"
    while [ -n "$steps" ]; do
        step=${steps%% ;; *}
        echo "    $n. $step"
        n=$((n + 1))
        if [ "$step" = "$steps" ]; then steps=""; else steps=${steps#* ;; }; fi
    done
    echo "    $n. Put $file into $DROP/ and run again:  ./$PROG --root $ROOT $name"
    echo "       (the script verifies it, records its sha256 and unpacks it into $ROOT/${R_DEST[i]};"
    local wanted=${R_PROVIDES[i]//,/ and }
    echo "        or unpack it yourself so that these exist under $ROOT: ${wanted//|/ or })"
    echo
}

# install_row ROW -> 0 ok, 1 failure, 3 manual steps needed
install_row() {
    local i=$1
    local name=${R_NAME[i]} file=${R_FILE[i]}
    local archive owned
    TOFU_NEW=""
    if [ -n "$MIRROR" ]; then CUR_SRC="$MIRROR/$name/$file"; else CUR_SRC=${R_URL[i]}; fi
    info "[$name] $file"
    if provides_ok "${R_PROVIDES[i]}" "$ROOT"; then
        if [ -f "$DONE/$name/$file" ]; then
            info "  already installed in $ROOT/${R_DEST[i]}: nothing to do"
        else
            info "  already present (not installed by this script; left as it is), found:"
            describe_found "${R_PROVIDES[i]}" "$ROOT"
        fi
        return 0
    fi
    if [ -f "$DROP/$file" ]; then
        archive="$DROP/$file" owned=0
        info "  using $archive (put there by hand; it is never deleted)"
        if [ "$DRY" = 1 ]; then info "  [dry-run] would verify it (${R_SUM[i]}) and unpack it into $ROOT/${R_DEST[i]}"; return 0; fi
        verify "$i" "$archive" 0 || return 1
    elif [ "${R_ACCESS[i]}" = manual ] && [ -z "$MIRROR" ]; then
        print_manual "$i"
        return 3
    else
        if [ "$DRY" = 1 ]; then
            info "  [dry-run] would download $CUR_SRC (${R_SIZE[i]}) to $DL/$file.part,"
            info "  [dry-run] verify it (${R_SUM[i]}) and unpack it into $ROOT/${R_DEST[i]}"
            return 0
        fi
        pick_downloader
        GOT=""
        download "$i" || return 1
        archive=$GOT owned=1
    fi
    unpack "$i" "$archive" "$owned" || return 1
    record_tofu "$i"
    if ! provides_ok "${R_PROVIDES[i]}" "$ROOT"; then
        err "$name/$file: unpacked, but these are still missing under $ROOT: ${R_PROVIDES[i]}"
        return 1
    fi
    return 0
}

# ---------------------------------------------------------------------------------------------
[ "$DRY" = 1 ] && info "Dry run: nothing is downloaded or written."
info "Data folder: $ROOT"
FAILED=() MANUAL=() OK=()
seen=" "
for nm in "${SELECTED[@]}"; do
    case "$seen" in *" $nm "*) continue ;; esac
    seen="$seen$nm "
    status=0
    for ((r = 0; r < n_rows; r++)); do
        [ "${R_NAME[r]}" = "$nm" ] || continue
        rc=0
        install_row "$r" || rc=$?
        if [ "$rc" = 1 ]; then status=1; elif [ "$rc" = 3 ] && [ "$status" = 0 ]; then status=3; fi
    done
    case "$status" in 0) OK+=("$nm") ;; 3) MANUAL+=("$nm") ;; *) FAILED+=("$nm") ;; esac
done

echo
[ ${#OK[@]} -eq 0 ] || info "ready: ${OK[*]}"
[ ${#MANUAL[@]} -eq 0 ] || info "need the manual steps above: ${MANUAL[*]}"
[ ${#FAILED[@]} -eq 0 ] || err "failed: ${FAILED[*]} (see the messages above)"
if [ ${#OK[@]} -gt 0 ] && [ "$DRY" = 0 ]; then
    case "$ROOT" in
        "$HERE/data") ;;
        *) info "The loaders find these sets with WSSLIB_DATA=$ROOT (or root=$ROOT/<name>)." ;;
    esac
fi
if [ ${#FAILED[@]} -gt 0 ]; then exit 1; fi
if [ ${#MANUAL[@]} -gt 0 ]; then exit 3; fi
exit 0
