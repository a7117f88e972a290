"""The peer a user would write to load Kaggle's training.csv: pandas + numpy parsing of
the Image column. Prints seconds."""
import sys, time
import numpy as np, pandas as pd
t = time.perf_counter()
df = pd.read_csv(sys.argv[1])
X = np.vstack(df["Image"].apply(lambda s: np.fromstring(s, sep=" ")).values).astype(np.float32)
y = df.drop(columns=["Image"]).values.astype(np.float32)
print(f"{time.perf_counter() - t:.3f}")
