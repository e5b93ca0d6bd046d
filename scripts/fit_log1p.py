"""Fit the polynomial q(u) ~ log1p(u)/u on [0, 1] used by the CPU engine's log1p_unit32.

Prints the float32 coefficients (lowest order first) and the max relative error of
u * q(u) evaluated in float32 Horner form against float64 log1p.
"""

import numpy as np

u = np.linspace(0, 1, 200001)
f = np.where(u > 0, np.log1p(u) / np.where(u > 0, u, 1), 1.0)
deg = 8
p = np.polynomial.chebyshev.Chebyshev.fit(u, f, deg, domain=[0, 1])
coef = p.convert(kind=np.polynomial.Polynomial).coef.astype(np.float32)
u32 = u.astype(np.float32)
acc = coef[-1]
for k in coef[-2::-1]:
    acc = acc * u32 + k
ref = np.log1p(u32.astype(np.float64))
rel = np.abs(u32.astype(np.float64) * acc - ref)[1:] / ref[1:]
print("coefficients:", [float(c) for c in coef])
print("max relative error:", rel.max())
