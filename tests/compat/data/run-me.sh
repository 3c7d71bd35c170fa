#!/app/c-exec script-arg
