module np.local/np

go 1.19
