# bench-apps: word frequencies of a text (gawk), the five most common.
{
    for (i = 1; i <= NF; i++)
        count[$i]++
}
END {
    PROCINFO["sorted_in"] = "@val_num_desc"
    n = 0
    for (w in count) {
        print w, count[w]
        if (++n == 5)
            break
    }
}
