module stormsim/testbed

go 1.19
