module proxysuite.kind/node

go 1.26.0
