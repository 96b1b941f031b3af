FROM debian AS 1st
