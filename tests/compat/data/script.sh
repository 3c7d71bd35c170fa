#!/bin/sh
# Shell builtins only: kiln has no fork yet, so no external commands,
# pipes or command substitution.
set -e
greet() {
    printf 'hello, %s (%d args)\n' "$1" "$#"
}
greet "$@"
total=0
i=1
while [ "$i" -le 10 ]; do
    total=$((total + i * i))
    i=$((i + 1))
done
echo "sum of squares: $total"
for w in alpha beta gamma; do
    case "$w" in
        a*) echo "$w starts with a" ;;
        *) echo "$w: ${#w} letters, upper ${w%a}" ;;
    esac
done
count=0
while IFS= read -r line; do
    count=$((count + 1))
    [ "$count" -le 2 ] && echo "line $count: $line"
done < /data/words.txt
echo "lines: $count"
x="a:b:c"
IFS=: set -- $x
echo "fields: $# last=$3"
test -d /data && echo "/data is a directory"
[ -x /data/script.sh ] && echo "script is executable"
[ -e /nonexistent ] || echo "no /nonexistent"
exit 3
