#!/usr/bin/env bash
# Install WordNet 3.0 for nltk's METEOR without network access to nltk's own downloader.
#
# Why: nltk's `meteor_score` matches synonyms through WordNet, and CI cannot run
# `python -m nltk.downloader wordnet`. Debian ships the same WordNet 3.0 database
# (wordnet-base + wordnet-sense-index) but lays it out differently and lacks the
# `lexnames` file nltk reads at load time, so we copy it and write that file.
#
# Usage: scripts/setup_wordnet.sh [NLTK_DATA_DIR]
#   NLTK_DATA_DIR defaults to the first entry of $NLTK_DATA, else $HOME/nltk_data
#   (a directory nltk searches even without NLTK_DATA). Idempotent: safe to re-run.
set -euo pipefail

nltk_data_env="${NLTK_DATA:-}"
target_root="${1:-${nltk_data_env%%:*}}"
target_root="${target_root:-$HOME/nltk_data}"
src=/usr/share/wordnet
dest="$target_root/corpora/wordnet"

if [[ ! -f "$src/data.noun" || ! -f "$src/index.sense" ]]; then
    sudo=""
    if [[ "$(id -u)" != 0 ]]; then sudo="sudo"; fi
    export DEBIAN_FRONTEND=noninteractive
    if ! $sudo apt-get install -y -q wordnet-base wordnet-sense-index; then
        $sudo apt-get update -q
        $sudo apt-get install -y -q wordnet-base wordnet-sense-index
    fi
fi

mkdir -p "$dest"
# Copy, not symlink: nltk resolves paths itself and CI caches may not carry links.
cp -rL "$src"/. "$dest"/

# The 45 WordNet 3.0 lexicographer files: number, name, syntactic category
# (1 noun, 2 verb, 3 adjective, 4 adverb), as in WordNet's own dict/lexnames.
names=(
    adj.all adj.pert adv.all noun.Tops noun.act noun.animal noun.artifact noun.attribute
    noun.body noun.cognition noun.communication noun.event noun.feeling noun.food noun.group
    noun.location noun.motive noun.object noun.person noun.phenomenon noun.plant
    noun.possession noun.process noun.quantity noun.relation noun.shape noun.state
    noun.substance noun.time verb.body verb.change verb.cognition verb.communication
    verb.competition verb.consumption verb.contact verb.creation verb.emotion verb.motion
    verb.perception verb.possession verb.social verb.stative verb.weather adj.ppl
)
: > "$dest/lexnames"
for i in "${!names[@]}"; do
    name="${names[$i]}"
    case "$name" in
        noun.*) cat=1 ;;
        verb.*) cat=2 ;;
        adj.*) cat=3 ;;
        adv.*) cat=4 ;;
    esac
    printf '%02d\t%s\t%d\n' "$i" "$name" "$cat" >> "$dest/lexnames"
done

echo "WordNet installed in $dest"
echo "export NLTK_DATA=$target_root"
