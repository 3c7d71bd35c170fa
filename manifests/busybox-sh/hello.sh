# A shell-script appliance: busybox sh runs this script; only shell
# builtins, so no process is spawned.
echo "hello from a busybox shell script appliance"
for word in one two three; do
    echo "word: $word"
done
answer=$((6 * 7))
echo "the answer is $answer"
if [ -f /etc/hostname ]; then
    read -r name < /etc/hostname
    echo "hostname file says: $name"
fi
echo "arguments: $*"
